"""A child process's own peak RSS, not the test process's.

``os.wait4`` on a child started from a pytest worker reports at least the *worker's* resident size: the child
is forked (or vforked) from it, and Linux carries that high-water mark across ``exec``. A worker that has loaded
a few models is over 1 GiB, so a bound on the child's memory would test the worker. :func:`run_measured`
starts a small launcher first; the launcher forks and execs the real command and reports its ``wait4`` figure,
which then starts from the launcher's few MiB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_LAUNCHER = """
import json, os, sys
argv, report = json.loads(sys.argv[1]), sys.argv[2]
pid = os.fork()
if pid == 0:
    os.execv(argv[0], argv)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as fh:
    fh.write(str(usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(argv: list[str], report: Path, **popen) -> tuple[int, int]:
    """Run ``argv`` (its first item an absolute executable) with ``popen``'s stdin / stdout / stderr / cwd / env;
    return (exit status, the command's own peak RSS in bytes). ``report``: a scratch file for the figure."""
    child = subprocess.Popen([sys.executable, "-c", _LAUNCHER, json.dumps(argv), str(report)], **popen)
    code = child.wait()
    return code, int(Path(report).read_text())
