"""The figures ``vitcop batch`` reports: per (method, preset) and overall, over the results file.

Contract:

- :class:`ResultStats` covers *successful* results only (``error`` null): accuracy over the
  results with a ``correct`` value, mean and p95 latency over ``timings.total_s`` (p95 by nearest
  rank), mean visual tokens before pruning (``tokens.visual``), kept
  (``pruning.layer_averaged_visual``) and kept ratio (``pruning.layer_averaged_ratio``); a
  successful result without a pruning report counts as nothing pruned. Figures with no data are
  ``None``. :func:`aggregate` computes them from result lines (dicts).
- :class:`GroupSummary` is one (method, preset): this run's counts (``prefix_reuses``: answers on a
  pruned prefix kept from an earlier job on the clip; ``prefix_saved_s``: what those saved) plus
  :class:`ResultStats` over all its results, earlier runs' included. :class:`BatchSummary` is the whole run;
  :attr:`BatchSummary.exit_code` is 0 when every job of the input has a successful result and
  the run was not interrupted, else 1. :meth:`BatchSummary.to_dict` (``batch --json``) starts with
  ``"schema": "vitcop.batch-summary/1"`` (:data:`SCHEMA`) and ends with ``exit_code``.

Plain data and arithmetic: reads no file and does not import :mod:`vitcop_cli.batch`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable

from .store import _Row, _row

__all__ = ["SCHEMA", "BatchSummary", "GroupSummary", "ResultStats", "aggregate"]


SCHEMA = "vitcop.batch-summary/1"  # the "schema" of BatchSummary.to_dict() (batch --json)

@dataclass
class ResultStats:
    """Figures over successful results: accuracy over those with a ``correct`` value."""

    answered: int
    scored: int
    correct: int
    accuracy: float | None
    latency_mean_s: float | None  # timings.total_s
    latency_p95_s: float | None  # nearest rank
    visual_tokens_mean: float | None  # tokens.visual: N before pruning
    visual_kept_mean: float | None  # pruning.layer_averaged_visual
    kept_ratio_mean: float | None  # pruning.layer_averaged_ratio


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _p95(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def _stats(rows: Iterable[_Row]) -> ResultStats:
    ok = [r for r in rows if r.error is None]
    scored = [r for r in ok if r.correct is not None]
    n_correct = sum(1 for r in scored if r.correct)
    lat = [r.total_s for r in ok if r.total_s is not None]
    return ResultStats(
        answered=len(ok),
        scored=len(scored),
        correct=n_correct,
        accuracy=n_correct / len(scored) if scored else None,
        latency_mean_s=_mean(lat),
        latency_p95_s=_p95(lat),
        visual_tokens_mean=_mean([r.n_visual for r in ok if r.n_visual is not None]),
        visual_kept_mean=_mean([r.kept for r in ok if r.kept is not None]),
        kept_ratio_mean=_mean([r.ratio for r in ok if r.ratio is not None]),
    )


def aggregate(records: Iterable[dict]) -> ResultStats:
    """:class:`ResultStats` over output lines (dicts); lines with ``error`` set are not counted."""
    return _stats([_row(r) for r in records])


@dataclass
class GroupSummary:
    """One (method, preset): this run's counts, and :class:`ResultStats` over all its results."""

    method: str
    preset: str
    jobs: int
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_failed: int = 0
    prefix_reuses: int = 0  # answered in this run on a pruned prefix kept from an earlier job on the clip
    prefix_saved_s: float = 0.0  # what those reuses saved (their prefix.saved_s, summed)
    answered: int = 0
    scored: int = 0
    correct: int = 0
    accuracy: float | None = None
    latency_mean_s: float | None = None
    latency_p95_s: float | None = None
    visual_tokens_mean: float | None = None
    visual_kept_mean: float | None = None
    kept_ratio_mean: float | None = None


@dataclass
class BatchSummary:
    out: str
    model: str
    items: int  # distinct (video, prompt) items in the input
    jobs: int  # items x methods x presets
    ok: int
    failed: int
    skipped: int  # already done in the output
    skipped_failed: int  # failed earlier, not retried (retry_failed=False)
    duplicates: int  # input items repeating an earlier (video, prompt): run once
    torn_bytes: int  # bytes of a torn last line cut off before appending
    wall_s: float
    prefetch: bool
    interrupted: bool
    groups: list[GroupSummary]
    overall: GroupSummary
    ranks: int = 1  # processes that ran it (torchrun world size)
    prefix_reuses: int = 0  # jobs of this run answered on a reused pruned prefix
    prefix_saved_s: float = 0.0  # the decode, preprocess and prefix prefill those reuses did not run

    @property
    def exit_code(self) -> int:
        """0 when every job of the input has a successful result, else 1."""
        done = self.ok + self.skipped
        return 0 if done == self.jobs and not self.interrupted else 1

    def to_dict(self) -> dict:
        """What ``batch --json`` prints: ``{"schema": SCHEMA, ...the fields..., "exit_code": ...}``."""
        d = {"schema": SCHEMA, **asdict(self)}
        d["exit_code"] = self.exit_code
        return d
