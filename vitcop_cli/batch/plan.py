"""Which jobs a batch runs, and which rank runs each: pure functions, the same on every rank.

Contract:

- Jobs. An item runs under every (method, preset) of the request, except the unpruned preset
  (``Preset.is_identity``, i.e. ``none``): it is method-independent (every method is the identity
  there, as in ``vitcop profile``), so it runs once per item and is recorded with method
  ``"none"`` (:data:`NO_METHOD`); it is generated with the first requested method, which prunes
  nothing at that preset. :func:`combos` lists the (method, preset) pairs in order: presets outer,
  methods inner.
- Keys. :func:`job_key` is the results key (see :mod:`.store`): resolved clip path, prompt, model
  identity, preset label, method.
- Plan. :func:`plan` drops repeated items (same clip and prompt, counted as ``duplicates``) and
  keys that already have a result (a success; or any line when failures are not retried), and
  returns the pending :class:`Pending` items with their jobs, in input order.
- Shares. :func:`shares` splits the pending items over ``world`` ranks deterministically (same
  input, same split on every rank and every run) and balanced by expected cost: all items on one
  clip go to one rank (decoded once), and clips are dealt longest-first to the least-loaded rank
  (ties to the lower rank). Cost of a clip = jobs x expected frames (``--frames``, else the file
  size as a stand-in for duration, in 64 KiB units, capped by ``max_frames``; an image counts 1).
  Each rank runs its share in input order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from ..media.video import IMAGE_EXTENSIONS
from ..questions.inputs import BatchItem

__all__ = ["NO_METHOD", "Pending", "combos", "job_key", "plan", "shares"]

NO_METHOD = "none"


def combos(presets: Sequence, methods: Sequence[str]) -> list[tuple[str, object]]:
    """(recorded method, preset) pairs: presets outer, methods inner; an identity preset once, as ``none``."""
    out = []
    for p in presets:
        if p.is_identity:
            out.append((NO_METHOD, p))
        else:
            out.extend((m, p) for m in methods)
    return out


def job_key(item: BatchItem, model: str, preset, method: str) -> tuple:
    return (item.video, item.prompt, model, preset.label, method)


@dataclass
class Pending:
    item: BatchItem
    todo: list = field(default_factory=list)  # [(method, preset)]
    index: int = 0  # position among the unique items


@dataclass
class Plan:
    items: list[BatchItem]  # unique items, input order
    duplicates: int
    pending: list[Pending]
    done: dict  # key -> _Row for keys not run again (successes; failures when not retried)
    skipped: int
    skipped_failed: int


def plan(items: Sequence[BatchItem], jobs: list, model: str, earlier: dict, *, retry_failed: bool = True) -> Plan:
    """Pending jobs of ``items`` given ``earlier`` ({key: _Row} already in the results)."""
    unique, seen, duplicates = [], set(), 0
    for item in items:
        ident = (item.video, item.prompt)
        if ident in seen:
            duplicates += 1
            continue
        seen.add(ident)
        unique.append(item)
    pending, done = [], {}
    skipped = skipped_failed = 0
    for index, item in enumerate(unique):
        todo = []
        for m, p in jobs:
            key = job_key(item, model, p, m)
            row = earlier.get(key)
            if row is not None and row.error is None:
                skipped += 1
                done[key] = row
            elif row is not None and not retry_failed:
                skipped_failed += 1
                done[key] = row
            else:
                todo.append((m, p))
        if todo:
            pending.append(Pending(item, todo, index))
    return Plan(unique, duplicates, pending, done, skipped, skipped_failed)


def _clip_weight(video: str, frames: int | None, max_frames: int) -> int:
    ext = os.path.splitext(video)[1].lower().lstrip(".")
    if ext in IMAGE_EXTENSIONS:
        return 1
    if frames is not None:
        return max(1, frames)
    try:
        size = os.stat(video).st_size
    except OSError:
        return 1  # missing: fails fast
    return max(1, min(max_frames, size >> 16))


def shares(pending: Sequence[Pending], world: int, *, frames: int | None = None, max_frames: int = 768) -> list[list[Pending]]:
    """``world`` lists of pending items (each in input order), balanced by expected cost."""
    if world < 1:
        raise ValueError("world must be >= 1")
    groups: dict[str, list[Pending]] = {}
    for p in pending:
        groups.setdefault(p.item.video, []).append(p)
    costs = []
    for video, ps in groups.items():
        weight = _clip_weight(video, frames, max_frames)
        costs.append((sum(len(p.todo) for p in ps) * weight, ps[0].index, video))
    load = [0] * world
    owner: dict[str, int] = {}
    for cost, _, video in sorted(costs, key=lambda c: (-c[0], c[1])):
        rank = min(range(world), key=lambda r: (load[r], r))
        load[rank] += cost
        owner[video] = rank
    out: list[list[Pending]] = [[] for _ in range(world)]
    for p in pending:
        out[owner[p.item.video]].append(p)
    return out
