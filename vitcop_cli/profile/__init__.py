"""``vitcop profile``: which ratio to deploy — every (method, preset) timed on one clip, side by side.

The parts, each with its own contract:

- :mod:`.run`: the schedule (:func:`run_order`), :func:`run_profile` and its dataclasses
  (:class:`ProfileResult`, :class:`ProfileRow`), ``--json`` / ``--csv`` output.
- :mod:`.answers`: ``--answers``, accuracy per row on labelled questions about the clip.
- :mod:`.view`: the table on stdout.
- :mod:`.plot`: ``--plot`` (matplotlib, optional).
- :mod:`.cli`: the command (parse, call the library, render).

Public names of :mod:`.run` are re-exported here. Importing this package is cheap (no torch).
"""

from .run import (
    BASELINE,
    DEFAULT_METHODS,
    DEFAULT_PRESETS,
    MEMORY_CPU,
    MEMORY_CUDA,
    RATIO_WARNING,
    SCHEMA,
    ProfileResult,
    ProfileRow,
    RunSlot,
    Spread,
    entries,
    run_order,
    run_profile,
    to_csv,
    to_json,
)

__all__ = [
    "BASELINE",
    "DEFAULT_METHODS",
    "DEFAULT_PRESETS",
    "MEMORY_CPU",
    "MEMORY_CUDA",
    "RATIO_WARNING",
    "SCHEMA",
    "ProfileResult",
    "ProfileRow",
    "RunSlot",
    "Spread",
    "entries",
    "run_order",
    "run_profile",
    "to_csv",
    "to_json",
]
