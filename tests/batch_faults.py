"""``vitcop`` with one fault injected, for tests/test_batch_distributed.py (run as a torchrun script).

``VITCOP_TEST_FAULT`` says which, for the rank it names:

- ``load:R``: rank R fails to load the model (as out-of-memory would).
- ``kill:R:N``: rank R kills itself with SIGKILL when about to generate its (N+1)-th answer; only in
  torchrun's first attempt (``TORCHELASTIC_RESTART_COUNT`` "0" or unset), so a group restarted by
  ``--max-restarts`` runs clean. With ``VITCOP_TEST_FAULT_LOG`` set, a line is appended to that file
  just before the kill.
- ``crash-before-merge``: rank 0 dies (``os._exit``) after every rank finished, before the final merge.
"""

import os
import signal

from vitcop_cli import api
from vitcop_cli.batch import merge as merging
from vitcop_cli.errors import RuntimeFailure

kind, *args = os.environ.get("VITCOP_TEST_FAULT", "none").split(":")
rank = int(os.environ.get("RANK", "0"))

if kind == "load" and rank == int(args[0]):
    def _load(*_a, **_k):
        raise RuntimeFailure("out of GPU memory while loading (injected)")

    api.load = _load
elif kind == "kill" and rank == int(args[0]) and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
    _answer, _calls = api.Session.answer, [0]  # every answer goes through it (Session.generate included)

    def _killing_answer(self, *a, **k):
        _calls[0] += 1
        if _calls[0] > int(args[1]):
            if os.environ.get("VITCOP_TEST_FAULT_LOG"):
                with open(os.environ["VITCOP_TEST_FAULT_LOG"], "a") as log:
                    log.write(f"killed rank {rank} before answer {_calls[0]}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return _answer(self, *a, **k)

    api.Session.answer = _killing_answer
elif kind == "crash-before-merge" and rank == 0:
    _merge, _merges = merging.merge, [0]

    def _crashing_merge(*a, **k):
        _merges[0] += 1
        if _merges[0] == 2:  # the first merge recovers earlier runs; the second is the final one
            os._exit(9)
        return _merge(*a, **k)

    merging.merge = _crashing_merge

from vitcop_cli.app import main  # noqa: E402

main()
