"""Ctrl-C while an answer is generated cancels that answer, not the chat.

Contract: :class:`AnswerCancel` is a context manager around one answer. Inside it (main thread only; elsewhere
it changes nothing), the first SIGINT sets :attr:`AnswerCancel.event` instead of raising, and the stopping
criteria of :meth:`AnswerCancel.criteria` (``transformers`` ``StoppingCriteria``, checked after every generated
token; a bool tensor shaped ``(batch,)``) end generation at the next token; :attr:`cancelled` then says so. A second SIGINT
while the first is being honoured raises ``KeyboardInterrupt`` (the chat ends, status 130). The previous SIGINT
handler is restored on exit. The model's prefill is not interruptible: a Ctrl-C during it takes effect after the
first token.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["AnswerCancel"]


class AnswerCancel:
    """SIGINT -> cancel this answer (see the module docstring)."""

    def __init__(self):
        self.event = threading.Event()
        self._previous = None
        self._installed = False

    def __enter__(self) -> "AnswerCancel":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc) -> bool:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.default_int_handler)
            self._installed = False
        return False

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the answer to wind down
        self.event.set()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def criteria(self) -> list:
        """``transformers`` stopping criteria that end generation once the answer is cancelled."""
        import torch
        from transformers import StoppingCriteria

        event = self.event

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

        return [Cancelled()]
