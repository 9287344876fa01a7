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
items anyway.

With the on-disk store (:mod:`.disk`), the jobs no kept prefix is expected to serve (each clip's first jobs) are
looked up first; when the store serves every one of them, the clip is not decoded at all: its tokens-only prompt is
rendered from the hit's visual (no pixels), which the decode cache then holds for the next item on the clip, and a
job that still needs pixels (a prefix that does not cover its prompt) decodes the clip on demand
(:meth:`Clips.full`). Every ``prepare`` / ``prepare_prompt`` call of one :class:`Clips` runs under one lock, so the
processor is never used by the prefetch thread and the caller at once.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from ..options import check_text
from ..session.prompting import question_messages, without_pixels

__all__ = ["ClipInput", "Clips"]


@dataclasses.dataclass
class ClipInput:
    """One entry's inputs. ``full``: ``Session.prepare``'s (pixels included; ``visual`` without frames), or
    None until :meth:`Clips.full` makes it; ``prompt``: the tokens-only ``Session.prepare_prompt`` (None when no
    job expects a kept or stored prefix); ``source``: the decoded visual, kept while ``full`` is None (None when
    the clip was not decoded: :meth:`Clips.full` decodes it then); ``disk``: the store's
    :class:`.disk.DiskLookup` (None without a store); ``meta``: with a store, the decoded visual without pixels
    (an image's kept), what saving a prefix built from it records."""

    decode_s: float
    full: object = None
    prompt: object = None
    source: object = dataclasses.field(default=None, repr=False)
    disk: object = dataclasses.field(default=None, repr=False)
    meta: object = dataclasses.field(default=None, repr=False)


class Clips:
    """``Clips(session, mine, sampling, prepare_options, expect=None)``: ``sampling`` goes to
    ``Session.load_visual``, ``prepare_options`` (``system``, ``max_pixels``, ``min_pixels``) to
    ``Session.prepare``; ``mine`` is this rank's share, in order; ``expect``: :func:`.reuse.expected_reuse`'s
    ``{id(entry): jobs}`` (None: no job expects a kept prefix); ``disk``: a :class:`.disk.DiskPrefixes` (the
    store's lookups for the jobs no kept prefix is expected to serve), or None."""

    def __init__(self, session, mine, sampling: dict, prepare_options: dict, expect: dict | None = None,
                 disk=None):
        self.session, self.sampling, self.prepare_options, self.disk = session, sampling, prepare_options, disk
        self.next_video = {id(mine[i].item): mine[i + 1].item.video for i in range(len(mine) - 1)}
        self.expect = expect or {}
        self.cache: dict = {}
        self._lock = threading.Lock()

    def __call__(self, entry) -> ClipInput:
        item = entry.item
        if self.cache.get("video") != item.video:
            self.cache.clear()
        try:
            expected = self.expect.get(id(entry), set())
            firsts = {(m, pr.label) for m, pr in entry.todo} - expected
            disk = None if self.disk is None else self.disk.lookup(item.video, entry.todo, firsts)
            hits = {} if disk is None else disk.hits
            pixels = any(job not in hits for job in firsts)  # a first job the store does not serve: prepared in full
            visual, decode_s, decoded = self._visual(item, pixels, disk)
            value = ClipInput(decode_s=decode_s, disk=disk)
            if self.disk is not None and decoded:
                value.meta = without_pixels(visual)  # what a saved prefix's file records of the clip
            if pixels:
                value.full = self._full(visual, item)
            elif decoded:
                value.source = visual  # for a job whose prefix turns out missing (Clips.full)
            if expected or hits:
                value.prompt = self._prompt(visual, item)
            return value
        finally:
            if self.next_video.get(id(item)) != item.video:
                self.cache.clear()

    def _visual(self, item, pixels: bool, disk) -> tuple:
        """``(visual, decode_s, decoded)``: the clip decoded (or the decode cache's), or, when no pixels are needed,
        whatever is at hand without decoding (the cache's, a store hit's visual: ``decoded`` False)."""
        cache = self.cache
        if cache.get("video") == item.video and (cache["decoded"] or not pixels):
            if cache["failure"] is not None:
                raise cache["failure"]
            return cache["visual"], 0.0, cache["decoded"]
        keep = self.next_video.get(id(item)) == item.video  # keep it for the next item only
        if not pixels and disk is not None and disk.visual is not None:
            if keep:
                self.cache.update(video=item.video, visual=disk.visual, failure=None, decoded=False)
            return disk.visual, 0.0, False
        visual, decode_s = self._decode(item, keep)
        return visual, decode_s, True

    def _decode(self, item, keep: bool) -> tuple:
        self.cache.clear()
        t0 = time.perf_counter()
        try:
            visual, failure = self.session.load_visual(item.video, **self.sampling), None
        except Exception as exc:  # noqa: BLE001
            visual, failure = None, exc
        if keep:
            self.cache.update(video=item.video, visual=visual, failure=failure, decoded=True)
        if failure is not None:
            raise failure
        return visual, time.perf_counter() - t0

    def full(self, value: ClipInput, item):
        """``value.full``, made now from ``value.source`` when it was not prepared ahead (the clip decoded now
        when only a store hit's visual was at hand)."""
        if value.full is None:
            source = value.source
            if source is None:
                t0 = time.perf_counter()
                source = self.session.load_visual(item.video, **self.sampling)
                value.decode_s += time.perf_counter() - t0
                if self.disk is not None:
                    value.meta = without_pixels(source)
            value.full, value.source = self._full(source, item), None
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
                visual, question_messages(visual.kind, item.prompt, system),
                max_pixels=self.prepare_options.get("max_pixels"), min_pixels=self.prepare_options.get("min_pixels"),
            )
