"""Timing of pruning work and of a prefill's phases without stalling the GPU queue.

:class:`Stopwatch` sums the time spent inside pruning hooks, per tag (``encoder``: the Stage-I capture
inside the vision encoder; ``entry``: the cut at the LLM's door; ``layers``: the cuts and gathers inside
the decoder), so a phase breakdown can take each part out of the phase it happened in. On CPU it reads
``time.perf_counter``. On CUDA it records a pair of CUDA events around each timed span (no host
synchronisation inside the model's layers); :meth:`Stopwatch.settle` synchronises once — called by the
engine at the end of the prefill — and adds the elapsed times up. ``seconds`` (the total) and ``tags``
are therefore exact after each prefill.

:class:`Timeline` records named instants the same way (``perf_counter`` on CPU, one CUDA event each on
CUDA, resolved by one synchronisation in :meth:`Timeline.settle`); the phase timer of a generation
(:mod:`vitcop_cli.session.phases`) marks with it.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

#: the tags the engine times its work under (see the module docstring; ``encoder_reuse``: the repeat
#: detection before the vision encoder and the spreading of its outputs after it)
TAGS = ("encoder", "encoder_reuse", "entry", "layers")


class Stopwatch:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds = 0.0
        self.tags: dict[str, float] = dict.fromkeys(TAGS, 0.0)
        self._pending: list[tuple] = []

    @contextmanager
    def span(self, tag: str = "layers"):
        """Time the body (the work it enqueues, on CUDA) under ``tag``."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._pending.append((start, end, tag))
        else:
            started = time.perf_counter()
            try:
                yield
            finally:
                self._add(tag, time.perf_counter() - started)

    def wrap(self, fn, tag: str = "encoder"):
        """``fn`` with every call timed as one span (for hooks)."""
        def wrapper(*args, **kwargs):
            with self.span(tag):
                return fn(*args, **kwargs)
        return wrapper

    def settle(self) -> float:
        """Resolve pending CUDA spans (one synchronisation) and return the total seconds."""
        if self._pending:
            self._pending[-1][1].synchronize()
            for start, end, tag in self._pending:
                self._add(tag, start.elapsed_time(end) / 1000.0)
            self._pending.clear()
        return self.seconds

    def reset(self) -> None:
        self.settle()
        self.seconds = 0.0
        self.tags = dict.fromkeys(TAGS, 0.0)

    def _add(self, tag: str, seconds: float) -> None:
        self.seconds += seconds
        self.tags[tag] = self.tags.get(tag, 0.0) + seconds


class Timeline:
    """Named instants on one device's clock; ``between(a, b)`` in seconds after :meth:`settle`.

    A name marked twice keeps its first instant unless ``again=True`` (then the last)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.mps = device.type == "mps"  # no timing events there: synchronise at each mark
        self._marks: dict[str, object] = {}
        self._origin = None
        self._times: dict[str, float] = {}

    def mark(self, name: str, again: bool = False) -> None:
        if name in self._marks and not again:
            return
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks[name] = event
        else:
            if self.mps:
                torch.mps.synchronize()
            self._marks[name] = time.perf_counter()

    def has(self, name: str) -> bool:
        return name in self._marks

    def settle(self) -> None:
        """Resolve every mark to seconds (one synchronisation on CUDA)."""
        if not self._marks:
            return
        if self.cuda:
            torch.cuda.synchronize()
            first = next(iter(self._marks.values()))
            self._times = {name: first.elapsed_time(ev) / 1000.0 for name, ev in self._marks.items()}
        else:
            first = next(iter(self._marks.values()))
            self._times = {name: t - first for name, t in self._marks.items()}

    def between(self, a: str, b: str) -> float:
        return self._times[b] - self._times[a]
