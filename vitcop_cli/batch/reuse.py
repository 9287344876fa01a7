"""Prefix reuse in a batch: which jobs can continue a kept pruned prefix, and the prefixes kept for the clip at hand.

Contract:

- What is shared. ViTCoP's pruning never reads the question, so a job's pruned prefix (system prompt +
  visual, prefilled under the preset: :class:`vitcop_cli.session.generation.KeptPrefix`) serves every later
  job on the same clip under the same (preset, method); the batch's sampling, pixel, resize and decoder
  options and its system prompt are the same for every item of a run. A method that reads the question
  (FastV) keeps no prefix.
- :func:`expected_reuse` (pure; used by :mod:`.clips` in the prefetch thread, ahead of the answers): for each
  entry of this rank's share, the jobs that a kept prefix should serve, i.e. jobs under a question-independent
  method that an earlier entry of the same run of consecutive entries on this clip also has. Those entries
  get a tokens-only prompt (``Session.prepare_prompt``: no pixel work); every other job gets the full
  ``Session.prepare``. A wrong guess costs time, never exactness: a job without a kept prefix makes its full
  inputs on demand, and one whose prefix does not cover its prompt (``PrefixMiss``) is answered afresh.
- :class:`ClipPrefixes` holds the kept prefixes of **one clip only**, one per (preset label, method), keyed
  by :func:`vitcop_cli.session.prefix_key.clip_key` of the model identity, the clip's resolved path (within
  one run consecutive items on one path share one decoded clip, :mod:`.clips`, so the path names the pixels
  exactly; no content digest is computed) and :class:`~vitcop_cli.session.prefix_key.ClipOptions` (preset,
  method, system prompt, fps, frames, max_frames, max_pixels, min_pixels, resize, decoder, decode_device).
  :meth:`ClipPrefixes.enter` drops every prefix as soon as the clip changes, so memory holds at most the
  current clip's prefixes (their KV bytes: ``prefix.bytes`` of the result lines). The key is necessary, not
  sufficient: ``Session.answer`` still checks that the prefix covers the prompt's tokens exactly.
"""

from __future__ import annotations

from typing import Callable, Sequence

from ..session.prefix_key import ClipOptions, clip_key

__all__ = ["ClipPrefixes", "expected_reuse"]

Job = tuple  # (recorded method, preset label)


def expected_reuse(mine: Sequence, keeps_prefix: Callable[[str], bool]) -> dict[int, set]:
    """``{id(entry): {(recorded method, preset label), ...}}`` over ``mine`` (this rank's pending entries, in
    order): the jobs of each entry that an earlier entry of the same run of consecutive entries on its clip also
    has, under a method for which ``keeps_prefix(recorded method)`` is true."""
    out: dict[int, set] = {}
    video, seen = None, set()
    for entry in mine:
        if entry.item.video != video:
            video, seen = entry.item.video, set()
        jobs = {(m, pr.label) for m, pr in entry.todo if keeps_prefix(m)}
        out[id(entry)] = jobs & seen
        seen |= jobs
    return out


class ClipPrefixes:
    """The kept prefixes of the clip at hand (see the module docstring). ``model``: the model's identity;
    ``options``: the run's :class:`ClipOptions` fields but preset and method (``system``, ``fps``, ...)."""

    def __init__(self, model: str, options: dict):
        self.model, self.options = model, dict(options)
        self.video: str | None = None
        self.kept: dict[str, object] = {}

    def key(self, video: str, preset: str, method: str) -> str:
        """The prefix key of ``video`` (a resolved path) under ``preset`` (its label) and ``method``."""
        return clip_key(self.model, f"path:{video}", ClipOptions(preset=preset, method=method, **self.options))

    def enter(self, video: str) -> None:
        """The next item is on ``video``: drop every prefix of another clip."""
        if video != self.video:
            self.kept.clear()
            self.video = video

    def get(self, video: str, preset: str, method: str):
        """The kept prefix for this key, or None."""
        return self.kept.get(self.key(video, preset, method)) if video == self.video else None

    def keep(self, video: str, preset: str, method: str, kept) -> None:
        """Keep ``kept`` (a ``KeptPrefix``; None keeps nothing) for the next job on ``video`` with this key."""
        self.enter(video)
        if kept is not None:
            self.kept[self.key(video, preset, method)] = kept

    def clear(self) -> None:
        self.kept.clear()
        self.video = None

    @property
    def nbytes(self) -> int:
        """KV bytes held now."""
        return sum(getattr(k, "nbytes", 0) for k in self.kept.values())
