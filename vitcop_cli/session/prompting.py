"""Prompt building: one (visual, question) or a whole conversation -> the processor's inputs, and the
prompt-length check.

Contract: :class:`PromptingMixin` gives ``Session`` its :meth:`~PromptingMixin.prepare`,
:meth:`~PromptingMixin.prepare_chat` and :meth:`~PromptingMixin.check_lengths`. Text is rendered
through the checkpoint's own chat template and processor (its frame sampling turned off: frames are
sampled by :mod:`vitcop_cli.media.video`); the tensors land on the session's device (floating ones in its
dtype). Raw text is bounded (:func:`vitcop_cli.options.check_text`) and the chat's shape checked before any
tokenizer sees it; the visual's size and aspect ratio are checked before the processor sees it
(:func:`vitcop_cli.media.video.check_frame_size`), and what the processor still refuses because of the input is
an :class:`InputError` (:func:`vitcop_cli.errors.input_fault`).
Preprocessing is CPU work and never waits on the GPU (batch prepares the next clip in a thread).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from pruning.compat import TOKEN_INPUTS

from ..errors import InputError, input_fault
from ..media.video import Visual, check_frame_size, shown_path
from ..options import check_frame_options, check_text

__all__ = ["Prepared", "PromptingMixin", "question_messages", "without_pixels"]


@dataclass
class Prepared:
    """Processor outputs for one (visual, question), on the session's device, plus bookkeeping."""

    inputs: dict
    visual: Visual
    question: str
    preprocess_s: float
    warnings: list[str]


class PromptingMixin:
    """``Session``'s prompt side; needs ``processor``, ``adapter``, ``device``, ``dtype``, ``max_positions``."""

    def check_lengths(self, max_new_tokens: int, prompt_tokens: int = 0) -> None:
        """InputError when ``prompt_tokens + max_new_tokens`` exceeds the model's maximum positions."""
        limit = self.max_positions
        if limit is None or prompt_tokens + max_new_tokens <= limit:
            return
        if prompt_tokens == 0 or max_new_tokens >= limit:
            raise InputError(
                f"--max-new-tokens {max_new_tokens:,} does not fit the model's {limit:,} positions "
                f"(prompt included); give at most {max(limit - max(prompt_tokens, 1), 1):,}"
            )
        raise InputError(
            f"the prompt is {prompt_tokens:,} tokens (visual tokens included); with --max-new-tokens "
            f"{max_new_tokens:,} that exceeds the model's {limit:,} positions; shorten the question, use fewer "
            "frames or a lower --max-pixels, or lower --max-new-tokens"
        )

    def prepare(
        self,
        visual: Visual,
        question: str,
        *,
        system: str | None = None,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
    ) -> Prepared:
        """One question about one visual (with an optional system prompt): :meth:`prepare_chat` on
        ``[system?, user: [visual, question]]``."""
        check_text(question)  # bound the raw text before the tokenizer sees it
        check_text(system, "the system prompt")
        return self.prepare_chat(visual, question_messages(visual.kind, question, system), max_pixels=max_pixels,
                                 min_pixels=min_pixels)

    def prepare_prompt(
        self,
        visual: Visual,
        messages: list[dict],
        *,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
    ) -> Prepared:
        """The token inputs only (``input_ids``, ``attention_mask``, ``mm_token_type_ids``, the grids: no pixels) of
        :meth:`prepare_chat`'s prompt: what a question on a kept prefix needs. A video's processor runs on a
        ``meta`` clip of its frames' shape (text and grid only, no pixel work); an image is processed again
        (the processor needs it whole). ``visual.frames`` may itself be a ``meta`` tensor (:func:`without_pixels`)."""
        if visual.kind == "video":
            visual = without_pixels(visual)
        return self.prepare_chat(visual, messages, max_pixels=max_pixels, min_pixels=min_pixels, tokens_only=True)

    def prepare_chat(
        self,
        visual: Visual,
        messages: list[dict],
        *,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
        tokens_only: bool = False,
    ) -> Prepared:
        """Like :meth:`prepare`, for a whole conversation about one visual (the server's multi-turn chat).

        ``messages``: Hugging Face chat format, ``[{"role": "system" | "user" | "assistant", "content":
        [{"type": "text", "text": ...} | {"type": "image" | "video"}, ...]}, ...]``, ending with a user
        turn; exactly one visual part in all, of ``visual.kind``, in a user turn. Rendered through the
        checkpoint's own chat template, so ``[system?, user: [visual, text]]`` gives exactly the inputs
        :meth:`prepare` gives. ``Prepared.question`` is the text of the last user turn. ``tokens_only``: keep
        only the inputs with one entry per prompt token (:meth:`prepare_prompt`).
        """
        check_frame_options(max_pixels=max_pixels, min_pixels=min_pixels)
        check_frame_size(visual.width, visual.height, f"{visual.kind} {shown_path(visual.path)}")
        started = time.perf_counter()  # CPU work: never wait on the GPU here (batch prepares in a thread)
        _check_messages(messages)
        for m in messages:
            for part in m.get("content", []):
                if part.get("type") == "text":
                    check_text(part.get("text"), "a message")  # bound raw text before tokenising
        if not messages or messages[-1].get("role") != "user":
            raise InputError("the conversation must end with a user message")
        placed = [
            (m.get("role"), part.get("type"))
            for m in messages
            for part in m.get("content", [])
            if part.get("type") in ("image", "video")
        ]
        if placed != [("user", visual.kind)]:
            raise InputError(f"the conversation must hold exactly one {visual.kind}, in a user message")
        question = " ".join(
            part["text"] for part in messages[-1]["content"] if part.get("type") == "text" and part.get("text")
        )
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        seen = _filled(visual, self.adapter.min_video_frames())  # what the processor is given
        extra, warnings = self.adapter.processor_kwargs(
            self.processor, visual.kind, max_pixels=max_pixels, min_pixels=min_pixels, visual=seen
        )
        try:
            batch = _with_preprocessed(self.processor, text, seen, extra) if seen.processed is not None else None
            if batch is None:
                media = {"videos": [seen.frames]} if visual.kind == "video" else {"images": [seen.frames]}
                batch = self.processor(text=[text], return_tensors="pt", **media, **extra)
        except ValueError as exc:
            fault = input_fault(exc, f"preprocessing {visual.kind} {shown_path(visual.path)}")
            if fault is None:
                raise
            raise fault from None
        inputs = {
            k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in batch.items()
            if isinstance(v, torch.Tensor) and (not tokens_only or k in TOKEN_INPUTS or k.endswith("_grid_thw"))
        }
        return Prepared(inputs, visual, question, time.perf_counter() - started, warnings)


def question_messages(kind: str, question: str | None, system: str | None = None) -> list[dict]:
    """The conversation of one question about one visual of ``kind``: ``[system?, user: [visual, question]]``;
    ``question`` None: the visual alone (the prompt's system + visual part, what a pruned prefix covers)."""
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    text = [] if question is None else [{"type": "text", "text": question}]
    messages.append({"role": "user", "content": [{"type": kind}, *text]})
    return messages


def without_pixels(visual: Visual) -> Visual:
    """A video ``visual`` with its frames replaced by a ``meta`` tensor of their shape and no preprocessed
    pixels: enough to render prompts about it (:meth:`PromptingMixin.prepare_prompt`), holding no pixel memory."""
    if visual.kind != "video" or (isinstance(visual.frames, torch.Tensor) and visual.frames.is_meta):
        return visual
    shape = tuple(visual.frames.shape)
    return dataclasses.replace(visual, frames=torch.empty(shape, dtype=torch.uint8, device="meta"), processed=None)


def _check_messages(messages) -> None:
    """InputError unless ``messages`` is a list of ``{"role": str, "content": [dict, ...]}`` (the shape
    :meth:`PromptingMixin.prepare_chat` documents), so a malformed chat is a bad input, not a crash."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InputError("the conversation must be a list of messages (objects with a role and a content list)")
    for i, m in enumerate(messages, 1):
        if not isinstance(m.get("role"), str):
            raise InputError(f"message {i}: the role must be a string (system, user or assistant)")
        content = m.get("content", [])
        if not isinstance(content, list) or not all(isinstance(part, dict) for part in content):
            raise InputError(f"message {i}: the content must be a list of parts (objects with a type)")


def _filled(visual: Visual, least: int) -> Visual:
    """``visual`` as the family's processor must be given it: a video of fewer than ``least`` frames (Qwen3-VL,
    Qwen3.5: one temporal patch of 2) with its last frame (index, time) repeated up to ``least`` — what Qwen2-VL's
    processor does itself for a partial patch. ``Prepared.visual`` keeps the frames actually decoded."""
    short = least - visual.num_frames
    if visual.kind != "video" or short <= 0 or visual.frames is None:
        return visual
    frames = torch.cat([visual.frames, visual.frames[-1:].expand(short, *visual.frames.shape[1:])])
    return dataclasses.replace(visual, frames=frames, indices=visual.indices + visual.indices[-1:] * short,
                               timestamps=visual.timestamps + visual.timestamps[-1:] * short)


def _with_preprocessed(processor, text: str, visual: Visual, extra: dict):
    """The processor's outputs for ``text`` and ``visual`` using the pixel values preprocessed while the clip
    decoded (``visual.processed``): the processor runs on a ``meta`` clip of the frames' shape (the text, the
    grid, nothing computed on pixels), and its pixel values are swapped for the preprocessed ones when their
    shape and every other output agree; ``None`` (process it whole) when they do not."""
    clip = torch.empty(visual.frames.shape, dtype=torch.uint8, device="meta")
    batch = processor(text=[text], return_tensors="pt", videos=[clip], **extra)
    done = visual.processed
    key = "pixel_values_videos"
    if batch[key].shape != done[key].shape or any(not torch.equal(batch[k], v) for k, v in done.items() if k != key):
        return None
    batch[key] = done[key]
    return batch
