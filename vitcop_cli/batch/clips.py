"""The clip of each batch item, decoded for the model and prepared (in the prefetch thread when asked).

Contract: a :class:`Clips` is called with one planned entry and returns ``(Prepared, video_decode_s)``; a clip
that cannot be read raises its error (the entry's jobs become error lines). Consecutive items on one clip decode
it once: the decoded visual (and the pixels preprocessed while it decoded) is kept for the next item only, then
dropped, and the repeat's ``video_decode_s`` is 0.
"""

from __future__ import annotations

import dataclasses
import time

__all__ = ["Clips"]


class Clips:
    """``Clips(session, mine, sampling, prepare_options)``: ``sampling`` goes to ``Session.load_visual``,
    ``prepare_options`` to ``Session.prepare``; ``mine`` is this rank's share, in order."""

    def __init__(self, session, mine, sampling: dict, prepare_options: dict):
        self.session, self.sampling, self.prepare_options = session, sampling, prepare_options
        self.next_video = {id(mine[i].item): mine[i + 1].item.video for i in range(len(mine) - 1)}
        self.cache: dict = {}

    def __call__(self, entry):
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
        if failure is not None:
            raise failure
        prepared = self.session.prepare(visual, item.prompt, **self.prepare_options)
        prepared.visual = dataclasses.replace(visual, frames=None, processed=None)  # the inputs are all we need
        if self.next_video.get(id(item)) != item.video:
            self.cache.clear()
        return prepared, decode_s
