"""What a running batch reports: :class:`BatchProgress` events, counted by :class:`Tracker` over this rank and,
under torchrun, every rank (through the job's store), including other ranks' failures. No model, no I/O."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass

from ..questions.inputs import BatchItem

__all__ = ["BatchProgress", "Tracker"]


@dataclass
class BatchProgress:
    """Passed to ``on_progress``: ``kind`` "start" once before the first job (``done == 0``), "job" after
    every job written (by this rank: ``item`` set; by another rank, only its failures: ``item_id`` /
    ``video`` set), "tick" when only the counts moved. Counts cover every rank."""

    done: int
    total: int  # jobs to run in this run, all ranks (skipped ones excluded)
    ok: int
    failed: int
    skipped: int
    skipped_failed: int
    elapsed_s: float
    item: BatchItem | None = None  # the job just written by this rank
    preset: str | None = None
    method: str | None = None
    error: str | None = None
    exception: BaseException | None = dataclasses.field(default=None, repr=False)
    kind: str = "job"
    item_id: str | int | None = None
    video: str | None = None
    rank: int = 0
    ranks: int = 1


class Tracker:
    """This run's counts; under torchrun also the job-wide counters in the store, and other ranks' failures."""

    def __init__(self, ctx, total, skipped, skipped_failed, started, on_progress):
        self.ctx, self.total, self.started, self.on_progress = ctx, total, started, on_progress
        self.skipped, self.skipped_failed = skipped, skipped_failed
        self.local = Counter()
        self.groups = Counter()  # (method, preset label, "ok" | "failed" | "reused")
        self.saved_s = Counter()  # (method, preset label) -> seconds saved by reused prefixes
        self.seen = 0

    def job(self, item, method, preset, error, exception, *, reused: bool = False, saved_s: float = 0.0) -> None:
        """One job written by this rank; ``reused``: it ran on a kept prefix, which saved ``saved_s``."""
        outcome = "ok" if error is None else "failed"
        self.local["done"] += 1
        self.local[outcome] += 1
        self.groups[(method, preset, outcome)] += 1
        if reused:
            self.groups[(method, preset, "reused")] += 1
            self.saved_s[(method, preset)] += saved_s
        if self.ctx is not None:
            self.ctx.add("done")
            self.ctx.add(outcome)
            if error is not None and not self.ctx.is_root:
                self.ctx.post({"id": item.id, "video": item.video, "method": method, "preset": preset,
                               "error": error, "rank": self.ctx.rank})
        self.emit("job", item=item, preset=preset, method=method, error=error, exception=exception)

    def counts(self) -> tuple[int, int, int]:
        if self.ctx is None:
            return self.local["done"], self.local["ok"], self.local["failed"]
        try:
            return self.ctx.count("done"), self.ctx.count("ok"), self.ctx.count("failed")
        except Exception:  # noqa: BLE001 - the store is gone (the job is being torn down)
            return self.local["done"], self.local["ok"], self.local["failed"]

    def emit(self, kind: str, **fields) -> None:
        if self.on_progress is None:
            return
        ranks = 1 if self.ctx is None else self.ctx.world
        rank = 0 if self.ctx is None else self.ctx.rank
        remote = []
        if self.ctx is not None and self.ctx.is_root:
            remote, self.seen = self.ctx.messages(self.seen)
        done, ok, failed = self.counts()
        common = dict(total=self.total, ok=ok, failed=failed, skipped=self.skipped,
                      skipped_failed=self.skipped_failed, elapsed_s=time.perf_counter() - self.started,
                      rank=rank, ranks=ranks)
        for msg in remote:
            self.on_progress(BatchProgress(done=done, kind="job", item_id=msg.get("id"), video=msg.get("video"),
                                           preset=msg.get("preset"), method=msg.get("method"),
                                           error=msg.get("error"), **{**common, "rank": msg.get("rank", 0)}))
        item = fields.get("item")
        if item is not None:
            fields.update(item_id=item.id, video=item.video)
        self.on_progress(BatchProgress(done=done, kind=kind, **common, **fields))
