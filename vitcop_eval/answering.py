"""One lmms-eval document answered on a vitcop ``Session``, on the pruned prefix of the document before when both
are about the same visual (imports no lmms-eval: testable without it).

Contract: :class:`DocAnswerer` ``(session, args, preset)``; :meth:`DocAnswerer.answer` ``(raw, question,
settings) -> AskResult`` for one document (``raw``: what the task's ``doc_to_visual`` returned; ``settings``:
its :class:`~vitcop_eval.options.GenerationSettings`).

- Fresh. The visual is decoded (:func:`vitcop_eval.visuals.to_visual`, sized for the model, ``resize`` as the
  model arguments say: ``exact`` by default), prepared with its pixels (``Session.prepare``) and answered
  (``Session.answer``), which hands back the pruned prefix it ran on (system prompt + visual, prefilled under
  the preset).
- Reuse. That prefix is kept with its key, and the visual's metadata (a video's frames let go). The next
  document whose key is equal is not decoded: its prompt is rendered tokens only (``Session.prepare_prompt``,
  no pixel work) and answered on the kept prefix (``prefix=``): bit-identical tokens to a fresh answer, the
  decode, preprocess, vision encoder and prefix prefill skipped (``result.prefix.reused``, ``saved_s``). A
  prefix that does not cover the prompt (``PrefixMiss``) is answered afresh. Only the last document's prefix
  is kept (one prefix at a time); a method that reads the question (FastV) keeps none.
- Key. :func:`vitcop_cli.session.prefix_key.clip_key` of the model, the media and
  :class:`~vitcop_cli.session.prefix_key.ClipOptions` (preset, method, system prompt, fps, the task's frame
  count, max_frames, max/min_pixels, resize, decoder, decode device). The media: a file by its resolved path,
  size and modification time (no content digest: reading a whole video per document would cost more than it
  checks); an in-memory PIL image by the SHA-256 of its mode, size and pixels. Anything else (several visuals,
  audio, ...) has no key: it goes to :func:`to_visual`, which refuses it.
- Counts. ``answers``, ``reuses`` and ``saved_s`` (summed ``prefix.saved_s``) over the answerer's life.
  :meth:`DocAnswerer.drop` lets the kept prefix go.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time

from vitcop_cli.errors import PrefixMiss
from vitcop_cli.options import check_text
from vitcop_cli.session.prefix_key import ClipOptions, clip_key
from vitcop_cli.session.prompting import question_messages, without_pixels

from .visuals import to_visual

__all__ = ["DocAnswerer", "media_identity"]


def media_identity(raw) -> str | None:
    """A string naming the one visual of ``raw`` (``doc_to_visual``'s return value) exactly enough to share a
    prefix within one run (see the module docstring); None when it names none (``to_visual`` says why)."""
    items = [x for x in (list(raw) if isinstance(raw, (list, tuple)) else [raw]) if x is not None]
    if len(items) != 1:
        return None
    item = items[0]
    if isinstance(item, (str, os.PathLike)):
        try:
            path = os.path.realpath(item)
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        return f"file:{path}:{st.st_size}:{st.st_mtime_ns}"
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return None
    if isinstance(item, Image.Image):
        h = hashlib.sha256(f"{item.mode}:{item.size}".encode())
        h.update(item.tobytes())
        return f"image:{h.hexdigest()}"
    return None


class DocAnswerer:
    """Answers documents one by one, reusing the last document's prefix when the key matches (module docstring).
    ``reuse=False`` (tests and benchmarks) answers every document afresh."""

    def __init__(self, session, args, preset, *, reuse: bool = True):
        self.session, self.args, self.preset, self.reuse = session, args, preset, reuse
        self.answers = self.reuses = 0
        self.saved_s = 0.0
        self._last: tuple | None = None  # (key, KeptPrefix, visual without pixels)

    def drop(self) -> None:
        """Let the kept prefix go (the end of a ``generate_until`` call)."""
        self._last = None

    def key(self, raw, settings) -> str | None:
        """The prefix key of a document's visual under these settings (None: no key)."""
        media = media_identity(raw)
        if media is None:
            return None
        a = self.args
        options = ClipOptions(
            preset=self.preset.label, method=a.method, system=a.system,
            fps=None if settings.frames is not None else (2.0 if a.fps is None else a.fps), frames=settings.frames,
            max_frames=a.max_frames, max_pixels=a.max_pixels, min_pixels=a.min_pixels, resize=a.resize,
            decoder=a.decoder, decode_device=a.decode_device,
        )
        return clip_key(self.session.name, media, options)

    def answer(self, raw, question: str, settings):
        """The :class:`~vitcop_cli.result.AskResult` of ``question`` about ``raw``'s visual."""
        options = dict(preset=self.preset, method=self.args.method, max_new_tokens=settings.max_new_tokens,
                       temperature=settings.temperature, top_p=settings.top_p)
        key = self.key(raw, settings) if self.reuse else None
        result = None
        if key is not None and self._last is not None and self._last[0] == key:
            _, kept, visual = self._last
            check_text(question)  # as prepare does: the same one-line error
            messages = question_messages(visual.kind, question, self.args.system)
            prompt = self.session.prepare_prompt(visual, messages, max_pixels=self.args.max_pixels,
                                                 min_pixels=self.args.min_pixels)
            try:
                result, kept = self.session.answer(prompt, prefix=kept, **options)
            except PrefixMiss:
                result = None  # not covered after all: decoded and answered afresh below
        if result is None:
            self._last = None  # the last prefix is let go before this visual is decoded
            result, kept, visual = self._fresh(raw, question, settings, options)
        self._last = (key, kept, visual) if key is not None and kept is not None else None
        self.answers += 1
        if result.prefix is not None and result.prefix.reused:
            self.reuses += 1
            self.saved_s += result.prefix.saved_s
        return result

    def _fresh(self, raw, question: str, settings, options: dict):
        """Decode, prepare with pixels, answer: (result, the prefix it ran on, the visual without its pixels)."""
        a = self.args
        started = time.perf_counter()
        visual = to_visual(
            raw, fps=a.fps, frames=settings.frames, max_frames=a.max_frames,
            loader=functools.partial(self.session.load_visual, max_pixels=a.max_pixels, min_pixels=a.min_pixels,
                                     resize=a.resize, decoder=a.decoder, decode_device=a.decode_device),
        )
        decode_s = time.perf_counter() - started
        prepared = self.session.prepare(visual, question, system=a.system, max_pixels=a.max_pixels,
                                        min_pixels=a.min_pixels)
        result, kept = self.session.answer(prepared, video_decode_s=decode_s, **options)
        return result, kept, without_pixels(visual)
