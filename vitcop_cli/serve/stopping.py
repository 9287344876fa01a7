"""Stopping criteria the worker hands to ``Session.generate`` (checked after every generated token).

Contract: :class:`CancelFlag` ends generation at the next token once its ``threading.Event`` is set
(client gone, request timed out, server shutting down). :class:`StopStrings` ends it once the
decoded text of the generated tokens (``skip_special_tokens``, as the answer is decoded) contains a
stop string. Both return a bool tensor shaped ``(batch,)`` as ``transformers`` expects.

:class:`StopStrings` is incremental: per token it decodes only a few tokens (the new ones plus a
short prefix, the way vLLM detokenizes a stream, so a character split over tokens is only read
once whole) and matches the new text with :class:`~vitcop_cli.serve.text_stream.AnswerText`'s
streaming matcher, so its cost per token does not grow with the answer. A hit is confirmed on the
whole decoded text before generation stops; should the two ever disagree (a tokenizer whose
piecewise decoding differs from its whole decoding), that row falls back to whole-text checks, so
generation never stops before a stop string really appears.
"""

from __future__ import annotations

import threading

import torch
from transformers import StoppingCriteria

from .text_stream import AnswerText


class CancelFlag(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _Row:
    """The decoded text of one row's generated tokens, fed to a stop matcher as it grows."""

    def __init__(self, stops: list[str]):
        self.matcher = AnswerText(stops)
        self.prefix = self.read = 0  # generated-token offsets: decoding context start, end of text already read
        self.whole = False  # fall back to decoding everything (see the module docstring)


class StopStrings(StoppingCriteria):
    def __init__(self, tokenizer, prompt_len: int, stops: list[str]):
        self.tokenizer, self.prompt_len, self.stops = tokenizer, prompt_len, [s for s in stops if s]
        self._rows: dict[int, _Row] = {}

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = [self._row_done(i, row) for i, row in enumerate(input_ids)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _in_whole(self, row: torch.LongTensor) -> bool:
        text = self._decode(row[self.prompt_len:].tolist())
        return any(s in text for s in self.stops)

    def _row_done(self, i: int, row: torch.LongTensor) -> bool:
        state = self._rows.get(i)
        if state is None:
            state = self._rows[i] = _Row(self.stops)
        if state.whole:
            return self._in_whole(row)
        ids = row[self.prompt_len + state.prefix:].tolist()
        before = self._decode(ids[: state.read - state.prefix])
        now = self._decode(ids)
        if len(now) <= len(before) or now.endswith("\ufffd"):  # nothing new, or a character still incomplete
            return False
        state.matcher.feed(now[len(before):])
        state.prefix, state.read = state.read, state.prefix + len(ids)
        if not state.matcher.found:
            return False
        if self._in_whole(row):
            return True
        state.whole = True
        return False
