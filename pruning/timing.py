"""Timing of pruning work without stalling the GPU queue.

:class:`Stopwatch` sums the time spent inside pruning hooks. On CPU it reads ``time.perf_counter``.
On CUDA it records a pair of CUDA events around each timed span (no host synchronisation inside the
model's layers); :meth:`Stopwatch.settle` synchronises once — called by the engine at the end of the
prefill — and adds the elapsed times up. ``seconds`` is therefore exact after each prefill.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch


class Stopwatch:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds = 0.0
        self._pending: list[tuple] = []

    @contextmanager
    def span(self):
        """Time the body (the work it enqueues, on CUDA)."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._pending.append((start, end))
        else:
            started = time.perf_counter()
            try:
                yield
            finally:
                self.seconds += time.perf_counter() - started

    def wrap(self, fn):
        """``fn`` with every call timed as one span (for hooks)."""
        def wrapper(*args, **kwargs):
            with self.span():
                return fn(*args, **kwargs)
        return wrapper

    def settle(self) -> float:
        """Resolve pending CUDA spans (one synchronisation) and return the total seconds."""
        if self._pending:
            self._pending[-1][1].synchronize()
            self.seconds += sum(s.elapsed_time(e) for s, e in self._pending) / 1000.0
            self._pending.clear()
        return self.seconds
