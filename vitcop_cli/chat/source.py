"""The clip a chat is about: its media file and the options it is opened with.

Contract: :class:`ClipSource` ``(session, media, **open_options)`` (``open_options``: ``Session.open``'s
keywords but ``preset``: method, fps, frames, max_frames, max_pixels, min_pixels, system, resize, decoder,
decode_device, prefix_store). :meth:`~ClipSource.open` ``(preset)`` decodes, encodes and prunes the clip once under
``preset`` (``Session.open``) -> a :class:`~vitcop_cli.session.pruned_clip.PrunedClip`; every option is checked
before anything is decoded. :meth:`~ClipSource.answer_fresh` ``(messages, preset, **generation)`` answers a
conversation from the clip's pixels (decoded again, prepared whole, one single-pass answer: the path a
conversation the kept prefix does not cover takes; ``result.prefix.kept`` says it).
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["ClipSource"]

_DECODE = ("fps", "frames", "max_frames", "max_pixels", "min_pixels", "resize", "decoder", "decode_device")


class ClipSource:
    """One media file and its opening options (see the module docstring)."""

    def __init__(self, session, media: Path, **open_options):
        self.session, self.media, self.options = session, media, open_options

    @property
    def method(self) -> str:
        return self.options.get("method", "vitcop")

    def open(self, preset: str):
        """The clip decoded, encoded and pruned once under ``preset``: a ``PrunedClip``."""
        return self.session.open(self.media, preset=preset, **self.options)

    def answer_fresh(self, messages: list[dict], preset: str, **generation):
        """``messages`` answered from the clip's pixels, decoded again (no kept prefix)."""
        s, o = self.session, self.options
        started = time.perf_counter()
        visual = s.load_visual(self.media, **{k: o[k] for k in _DECODE if k in o})
        decode_s = time.perf_counter() - started
        prepared = s.prepare_chat(visual, messages, max_pixels=o.get("max_pixels"), min_pixels=o.get("min_pixels"))
        return s.generate(prepared, preset=preset, method=self.method, video_decode_s=decode_s, **generation)
