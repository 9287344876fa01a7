"""Stopping criteria the worker hands to ``Session.generate`` (checked after every generated token).

Contract: :class:`CancelFlag` ends generation at the next token once its ``threading.Event`` is set
(client gone, request timed out, server shutting down). :class:`StopStrings` ends it once the
decoded text of the generated tokens (``skip_special_tokens``, as the answer is decoded) contains a
stop string. Both return a bool tensor shaped ``(batch,)`` as ``transformers`` expects.
"""

from __future__ import annotations

import threading

import torch
from transformers import StoppingCriteria


class CancelFlag(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class StopStrings(StoppingCriteria):
    def __init__(self, tokenizer, prompt_len: int, stops: list[str]):
        self.tokenizer, self.prompt_len, self.stops = tokenizer, prompt_len, [s for s in stops if s]

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = [
            any(s in self.tokenizer.decode(row[self.prompt_len:].tolist(), skip_special_tokens=True) for s in self.stops)
            for row in input_ids
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
