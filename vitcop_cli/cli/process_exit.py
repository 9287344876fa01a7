"""End the process with the intended status even while one of vitcop's worker threads is busy.

Why: a daemon thread still inside torch (a video decode, a processor resize, a forward) when the
interpreter finalises makes libtorch abort with ``terminate called without an active exception``
and status 134 (SIGABRT), instead of the status the command chose: an interrupted ``batch``
(143 on SIGTERM, 130 on Ctrl-C) or ``serve`` whose generation outlived its join timeout.

Contract: :func:`exit_process` ``(code)`` (an ``int``, ``None`` = 0, or a message string = 1, as
:class:`SystemExit` reads them) returns normally when no thread named ``vitcop-*``
(:data:`WORKER_PREFIX`) is alive, so ordinary exits keep interpreter finalisation and ``atexit``.
Otherwise it flushes stdout and stderr and calls :func:`os._exit` with that status, skipping
finalisation. Everything worth keeping is on disk by then: the commands write and close their
files, release their locks and print their last line before they exit. Threads vitcop does not own
are left to the interpreter.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["WORKER_PREFIX", "busy_workers", "exit_process", "status_of"]

WORKER_PREFIX = "vitcop-"


def busy_workers() -> list[str]:
    """Names of vitcop's threads (``vitcop-*``) still alive, other than the calling one."""
    me = threading.current_thread()
    return [t.name for t in threading.enumerate() if t is not me and t.is_alive() and t.name.startswith(WORKER_PREFIX)]


def status_of(code: object) -> int:
    """The exit status :class:`SystemExit` ``(code)`` gives: None -> 0, an int -> itself, else 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1


def exit_process(code: object) -> None:
    """``os._exit(status_of(code))`` if a ``vitcop-*`` thread is alive (after flushing stdio); else return."""
    if not busy_workers():
        return
    if isinstance(code, str):
        print(code, file=sys.stderr)  # what SystemExit would have printed
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can reach it
            pass
    os._exit(status_of(code))
