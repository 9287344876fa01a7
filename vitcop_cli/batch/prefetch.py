"""Decode and preprocess the next item while the current one generates.

Contract: :class:`Prefetcher` runs ``fn(x)`` for each ``x`` in a daemon thread named
:data:`THREAD_NAME`, at most ``depth`` items ahead of the consumer; iterating yields
``(x, value, exception)`` in order (an ``Exception`` from ``fn`` becomes that item's exception;
anything else is re-raised in the consumer). :meth:`Prefetcher.close` stops it: with
``wait=True`` (normal end) it joins the thread; with ``wait=False`` (an interruption) it returns at
once, so Ctrl-C never waits for a decode in flight: the thread takes nothing more, drops what it
is finishing and ends on its own. :class:`Inline` has the same interface without a thread.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Sequence

__all__ = ["THREAD_NAME", "Inline", "Prefetcher"]

THREAD_NAME = "vitcop-batch-prefetch"
_DONE = object()
_RAISE = object()


class Prefetcher:
    """``fn(x)`` for each x of ``xs`` in a background thread, at most ``depth`` items ahead of the consumer."""

    def __init__(self, fn: Callable, xs: Sequence, depth: int = 1):
        self._fn, self._xs = fn, list(xs)
        self._queue: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for x in self._xs:
                while not self._slots.acquire(timeout=0.05):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                try:
                    value = self._fn(x)
                except Exception as exc:  # noqa: BLE001 - becomes the item's error line
                    self._queue.put((x, None, exc))
                else:
                    self._queue.put((x, value, None))
        except BaseException as exc:  # noqa: BLE001 - hand anything else to the consumer
            self._queue.put((_RAISE, None, exc))
        finally:
            self._queue.put(_DONE)

    def __iter__(self):
        while True:
            got = self._queue.get()
            if got is _DONE:
                return
            if got[0] is _RAISE:
                raise got[2]
            self._slots.release()
            yield got

    def close(self, wait: bool = True) -> None:
        self._stop.set()
        if wait:
            self._thread.join()


class Inline:
    """The same interface, no thread: ``fn(x)`` when the consumer asks for the item."""

    def __init__(self, fn: Callable, xs: Sequence):
        self._fn, self._xs = fn, list(xs)

    def __iter__(self):
        for x in self._xs:
            try:
                value = self._fn(x)
            except Exception as exc:  # noqa: BLE001
                yield x, None, exc
            else:
                yield x, value, None

    def close(self, wait: bool = True) -> None:
        pass
