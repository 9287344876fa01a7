"""SIGTERM / SIGHUP handled like Ctrl-C, so ``kill`` and a closed terminal end a command cleanly.

Contract:

- :func:`terminate_as_interrupt` is a context manager. Inside it, SIGTERM and SIGHUP raise
  :class:`Terminated` in the main thread (at the next Python bytecode, like Ctrl-C's
  ``KeyboardInterrupt``); the previous handlers are restored on exit. Outside the main thread
  (where Python cannot install handlers) it does nothing. Signals this platform lacks (SIGHUP on
  Windows) are skipped.
- :class:`Terminated` is a :class:`KeyboardInterrupt`, so every ``except KeyboardInterrupt`` that
  finishes or abandons the item in flight handles it too. It carries ``signal_name``
  (``"SIGTERM"``) and ``exit_code``: 128 + the signal number (143 for SIGTERM, 129 for SIGHUP),
  the status a shell reports for a process killed by that signal.
- Only the first signal raises; a second one while the first is being handled is ignored so
  clean-up (closing files, releasing locks) is not cut short. SIGKILL cannot be caught.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["HANDLED", "Terminated", "terminate_as_interrupt"]

HANDLED: tuple[str, ...] = ("SIGTERM", "SIGHUP")


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal; ``exit_code`` = 128 + signal number."""

    def __init__(self, signal_name: str, exit_code: int):
        super().__init__(f"terminated by {signal_name}")
        self.signal_name = signal_name
        self.exit_code = exit_code


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM / SIGHUP into :class:`Terminated` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = {"done": False}

    def handler(signum, _frame):
        if fired["done"]:
            return  # already terminating: let the clean-up finish
        fired["done"] = True
        name = signal.Signals(signum).name
        raise Terminated(name, 128 + int(signum))

    previous = {}
    for name in HANDLED:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
