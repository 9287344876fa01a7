"""``vitcop batch``: many (clip, question) items through a model, on one process or many ranks under torchrun.

The parts, each with its own contract:

- :mod:`vitcop_cli.questions`: the items (a folder, a JSONL questions file), multiple choice, scoring
  (shared with ``profile --answers``).
- :mod:`.request`: the options and ``--out``, checked in one place before a model loads.
- :mod:`.plan`: the jobs (the unpruned preset once per item), what is pending, each rank's share.
- :mod:`.runner`: :func:`run_batch`, the loop over this rank's share.
- :mod:`.clips`: each item's clip decoded for the model and prepared; :mod:`.prefetch`: that, one item ahead
  in a thread; :mod:`.reuse`: the pruned prefixes kept for the clip at hand, reused by its next questions;
  :mod:`.disk`: their on-disk tier (``--prefix-cache DIR``), shared between runs, ranks and machines.
- :mod:`.progress`: the events a run reports and their counts (all ranks).
- :mod:`.store`: result lines, keys, reading, per-rank part files.
- :mod:`.merge`: parts into ``--out``, exactly one line per key, atomically.
- :mod:`.lock`: one batch per ``--out``.
- :mod:`.dist`: the ranks of a torchrun job agreeing on each step; shared progress counters.
- :mod:`.launch`: ``vitcop batch --nproc N`` starting torchrun.
- :mod:`.summary` and :mod:`.view`: the figures and their rendering.
- :mod:`.cli`: the ``vitcop batch`` command (parse, call the library, render).

The public names of :mod:`.runner` (``run_batch``, ``OutLock``, ...) are available here. They are
loaded on first use: :mod:`.runner` brings in torch, and the CLI imports this package (for
:mod:`.cli`) on every start, ``vitcop --help`` included.
"""

_SUBMODULES = frozenset({"cli", "clips", "disk", "dist", "launch", "lock", "merge", "plan", "prefetch", "progress",
                         "request", "reuse", "runner", "store", "summary", "view"})


def __getattr__(name: str):
    if name in _SUBMODULES or name.startswith("__"):  # submodules are imported by the import system itself
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import runner

    if name in runner.__all__:
        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
