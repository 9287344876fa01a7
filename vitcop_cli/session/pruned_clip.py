"""``PrunedClip``: one clip decoded, encoded and pruned once (``Session.open``), then asked many questions.

Contract: built by :meth:`vitcop_cli.session.Session.open` / ``open_visual``, which decode the clip, prepare
the prompt's system + visual part and prefill it under the preset into a kept pruned prefix
(:class:`~vitcop_cli.session.generation.KeptPrefix`). Then the clip's pixels are let go: a video keeps only
its frames' shape (a ``meta`` tensor, for rendering prompts), so what it holds is the survivors' KV cache
(``nbytes``). :meth:`PrunedClip.ask` / :meth:`PrunedClip.ask_chat` render each question's prompt (tokens only)
and continue the prefix (``Session.answer``): the answer is bit-identical to ``Session.ask`` on the same
clip and options. The first answer carries the cost of building the prefix (decode, preprocess, prefill) in
its times and says ``prefix.reused = false``; every later one says ``reused = true`` and how much time
reusing saved.

A clip opened from the on-disk prefix cache (``Session.open(..., prefix_store=)``, :mod:`.prefix_store`) has
``source = "disk"``: its answers all say ``prefix.reused = true, source = "disk"`` (the first one too, with the
stored build costs as ``saved_s``); the time it took to hash the media and read the file is charged to its first
answer as ``video_decode_s``. ``warnings``: lines for the first answer's ``warnings`` (the cache's own).

A method that reads the question (FastV) keeps no prefix: the clip then keeps its pixels and each question is
one single-pass prefill (``prefix.kept = false``).

A conversation whose tokens before the end of the visual differ from the prefix's (another system prompt,
text before the visual) raises :class:`~vitcop_cli.errors.PrefixMiss`: never an approximation.
"""

from __future__ import annotations

from typing import Callable

from ..errors import InputError
from ..media.video import Visual
from ..options import check_text
from ..result import AskResult
from .generation import KeptPrefix
from .prompting import question_messages, without_pixels

__all__ = ["PrunedClip"]


class PrunedClip:
    """A clip with its pruned prefix kept (see the module docstring). ``preset`` / ``method`` / ``system`` /
    pixel bounds are fixed at opening; ``prefix`` is the kept prefix (None for a method that reads the
    question)."""

    def __init__(self, session, visual: Visual, prefix: KeptPrefix | None, *, preset, method: str,
                 system: str | None, max_pixels: int | None, min_pixels: int | None, video_decode_s: float = 0.0,
                 source: str = "memory", warnings: list[str] | None = None):
        self.session = session
        self.source = source  # where the prefix came from: "memory" (built by this process) or "disk"
        self.warnings = list(warnings or [])  # added to the first answer's warnings
        self.prefix = prefix
        self.preset, self.method, self.system = preset, method, system
        self.max_pixels, self.min_pixels = max_pixels, min_pixels
        self.visual = visual if prefix is None else without_pixels(visual)
        # charged to the first answer (a prefix built here carries its own decode time)
        self._pending_decode_s = 0.0 if prefix is not None and source != "disk" else video_decode_s

    @property
    def nbytes(self) -> int:
        """Bytes the clip holds: its prefix's KV cache (0 when no prefix is kept)."""
        return 0 if self.prefix is None else self.prefix.nbytes

    def messages(self, question: str) -> list[dict]:
        """The conversation of one question about this clip: ``[system?, user: [visual, question]]``."""
        return question_messages(self.visual.kind, question, self.system)

    def ask(self, question: str, **options) -> AskResult:
        """Answer ``question`` about the clip; ``options`` as :meth:`ask_chat`."""
        check_text(question)
        if not question.strip():
            raise InputError("the question is empty")
        return self.ask_chat(self.messages(question), **options)

    def ask_chat(
        self,
        messages: list[dict],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float | None = None,
        on_text: Callable[[str], None] | None = None,
        seed: int | None = None,
        stopping_criteria: list | None = None,
        source: str | None = None,
    ) -> AskResult:
        """Answer the last user turn of ``messages`` (Hugging Face chat format, the clip's visual in a user
        turn, as ``Session.prepare_chat`` takes it) on the kept prefix. ``source``: where the prefix came from,
        for the report (default: the clip's ``source``, "memory", or "disk" for one read from a prefix cache)."""
        s = self.session
        options = dict(preset=self.preset, method=self.method, max_new_tokens=max_new_tokens,
                       temperature=temperature, top_p=top_p, on_text=on_text, seed=seed,
                       stopping_criteria=stopping_criteria)
        s.check_lengths(max_new_tokens)
        if self.prefix is None:
            prepared = s.prepare_chat(self.visual, messages, max_pixels=self.max_pixels, min_pixels=self.min_pixels)
            decode_s, self._pending_decode_s = self._pending_decode_s, 0.0
            result = s.generate(prepared, video_decode_s=decode_s, **options)
        else:
            prepared = s.prepare_prompt(self.visual, messages, max_pixels=self.max_pixels, min_pixels=self.min_pixels)
            decode_s, self._pending_decode_s = self._pending_decode_s, 0.0
            result, _ = s.answer(prepared, prefix=self.prefix, source=source or self.source, video_decode_s=decode_s,
                                 **options)
        if self.warnings:
            result.warnings += self.warnings
            self.warnings = []
        return result
