"""``vitcop batch``: many (clip, question) items through a model, on one process or many ranks under torchrun.

The parts, each with its own contract:

- :mod:`.inputs`: the items (a folder, a JSONL questions file), multiple choice, scoring.
- :mod:`.plan`: the jobs (the unpruned preset once per item), what is pending, each rank's share.
- :mod:`.runner`: :func:`run_batch`, the loop over this rank's share.
- :mod:`.prefetch`: decoding the next item in a thread.
- :mod:`.store`: result lines, keys, reading, per-rank part files.
- :mod:`.merge`: parts into ``--out``, exactly one line per key, atomically.
- :mod:`.lock`: one batch per ``--out``.
- :mod:`.dist`: the ranks of a torchrun job agreeing on each step; shared progress counters.
- :mod:`.launch`: ``vitcop batch --nproc N`` starting torchrun.
- :mod:`.summary` and :mod:`.view`: the figures and their rendering.

Public names are re-exported here from :mod:`.runner`.
"""

from .runner import *  # noqa: F401,F403
from .runner import __all__  # noqa: F401
