"""The clip of each batch item, decoded for the model and prepared (in the prefetch thread when asked).

Contract: a :class:`Clips` is called with one planned entry and returns a :class:`ClipInput`; a clip that
cannot be read raises its error (the entry's jobs become error lines). Consecutive items on one clip decode
it once: the decoded visual (and the pixels preprocessed while it decoded) is kept for the next item only, then
dropped, and the repeat's ``video_decode_s`` is 0.

What is prepared (:mod:`.reuse`): the jobs that a kept pruned prefix is expected to serve get a tokens-only
prompt (``Session.prepare_prompt``, no pixel work: the prefix covers the visual); every other job gets the full
``Session.prepare`` (with pixels). An entry prepared tokens only keeps its decoded clip (``source``) until it is
answered, so that a job finding no prefix, or one that does not cover its prompt, can still be prepared in
full (:meth:`Clips.full`, on the caller's thread); that clip is the one the decode cache holds for consecutive
items anyway. Every ``prepare`` / ``prepare_prompt`` call of one :class:`Clips` runs under one lock, so the
processor is never used by the prefetch thread and the caller at once.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from ..options import check_text

__all__ = ["ClipInput", "Clips", "messages"]


@dataclasses.dataclass
class ClipInput:
    """One entry's inputs. ``full``: ``Session.prepare``'s (pixels included; ``visual`` without frames), or
    None until :meth:`Clips.full` makes it; ``prompt``: the tokens-only ``Session.prepare_prompt`` (None when no
    job expects a kept prefix); ``source``: the decoded visual, kept while ``full`` is None."""

    decode_s: float
    full: object = None
    prompt: object = None
    source: object = dataclasses.field(default=None, repr=False)


def messages(kind: str, question: str, system: str | None) -> list[dict]:
    """The conversation ``Session.prepare`` renders: ``[system?, user: [visual, question]]``."""
    out = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    out.append({"role": "user", "content": [{"type": kind}, {"type": "text", "text": question}]})
    return out


class Clips:
    """``Clips(session, mine, sampling, prepare_options, expect=None)``: ``sampling`` goes to
    ``Session.load_visual``, ``prepare_options`` (``system``, ``max_pixels``, ``min_pixels``) to
    ``Session.prepare``; ``mine`` is this rank's share, in order; ``expect``: :func:`.reuse.expected_reuse`'s
    ``{id(entry): jobs}`` (None: no job expects a kept prefix)."""

    def __init__(self, session, mine, sampling: dict, prepare_options: dict, expect: dict | None = None):
        self.session, self.sampling, self.prepare_options = session, sampling, prepare_options
        self.next_video = {id(mine[i].item): mine[i + 1].item.video for i in range(len(mine) - 1)}
        self.expect = expect or {}
        self.cache: dict = {}
        self._lock = threading.Lock()

    def __call__(self, entry) -> ClipInput:
        item = entry.item
        if self.cache.get("video") == item.video:
            visual, decode_s, failure = self.cache["visual"], 0.0, self.cache["failure"]
        else:
            self.cache.clear()
            t0 = time.perf_counter()
            try:
                visual, failure = self.session.load_visual(item.video, **self.sampling), None
            except Exception as exc:  # noqa: BLE001
                visual, failure = None, exc
            decode_s = time.perf_counter() - t0
            if self.next_video.get(id(item)) == item.video:  # keep the frames for the next item only
                self.cache.update(video=item.video, visual=visual, failure=failure)
        try:
            if failure is not None:
                raise failure
            expected = self.expect.get(id(entry), set())
            value = ClipInput(decode_s=decode_s)
            if any((m, pr.label) not in expected for m, pr in entry.todo):
                value.full = self._full(visual, item)
            else:
                value.source = visual  # for a job whose prefix turns out missing (Clips.full)
            if expected:
                value.prompt = self._prompt(visual, item)
            return value
        finally:
            if self.next_video.get(id(item)) != item.video:
                self.cache.clear()

    def full(self, value: ClipInput, item):
        """``value.full``, made now from ``value.source`` when it was not prepared ahead."""
        if value.full is None:
            value.full, value.source = self._full(value.source, item), None
        return value.full

    def _full(self, visual, item):
        with self._lock:
            prepared = self.session.prepare(visual, item.prompt, **self.prepare_options)
        prepared.visual = dataclasses.replace(visual, frames=None, processed=None)  # the inputs are all we need
        return prepared

    def _prompt(self, visual, item):
        system = self.prepare_options.get("system")
        check_text(item.prompt)  # as prepare does: the same one-line errors
        check_text(system, "the system prompt")
        with self._lock:
            return self.session.prepare_prompt(
                visual, messages(visual.kind, item.prompt, system), max_pixels=self.prepare_options.get("max_pixels"),
                min_pixels=self.prepare_options.get("min_pixels"),
            )
