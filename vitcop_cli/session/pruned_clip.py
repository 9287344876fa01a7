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
from .prompting import without_pixels

__all__ = ["PrunedClip"]


class PrunedClip:
    """A clip with its pruned prefix kept (see the module docstring). ``preset`` / ``method`` / ``system`` /
    pixel bounds are fixed at opening; ``prefix`` is the kept prefix (None for a method that reads the
    question)."""

    def __init__(self, session, visual: Visual, prefix: KeptPrefix | None, *, preset, method: str,
                 system: str | None, max_pixels: int | None, min_pixels: int | None, video_decode_s: float = 0.0):
        self.session = session
        self.prefix = prefix
        self.preset, self.method, self.system = preset, method, system
        self.max_pixels, self.min_pixels = max_pixels, min_pixels
        self.visual = visual if prefix is None else without_pixels(visual)
        self._pending_decode_s = 0.0 if prefix is not None else video_decode_s  # charged to the first answer
        self.questions = 0

    @property
    def nbytes(self) -> int:
        """Bytes the clip holds: its prefix's KV cache (0 when no prefix is kept)."""
        return 0 if self.prefix is None else self.prefix.nbytes

    def messages(self, question: str) -> list[dict]:
        """The conversation of one question about this clip: ``[system?, user: [visual, question]]``."""
        messages = [{"role": "system", "content": [{"type": "text", "text": self.system}]}] if self.system else []
        messages.append({"role": "user", "content": [{"type": self.visual.kind}, {"type": "text", "text": question}]})
        return messages

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
        source: str = "memory",
    ) -> AskResult:
        """Answer the last user turn of ``messages`` (Hugging Face chat format, the clip's visual in a user
        turn, as ``Session.prepare_chat`` takes it) on the kept prefix. ``source``: where the prefix came from,
        for the report ("memory", or "disk" for one read from a prefix cache)."""
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
            result, _ = s.answer(prepared, prefix=self.prefix, source=source, **options)
        self.questions += 1
        return result
