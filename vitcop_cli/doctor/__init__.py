"""``vitcop doctor``: can this installation prune correctly? Versions, devices, self-tests.

The parts: :mod:`.checks` (the environment and the self-tests, :class:`DoctorReport`), :mod:`.view`
(the table on stdout) and :mod:`.cli` (the command). Public names of :mod:`.checks` are
re-exported here. Importing this package is cheap (no torch).
"""

from .checks import FAMILIES, Check, DoctorReport, environment, inspect, run

__all__ = ["FAMILIES", "Check", "DoctorReport", "environment", "inspect", "run"]
