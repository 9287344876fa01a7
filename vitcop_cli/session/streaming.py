"""Stream generated text to a callback as it is produced (word-boundary flushing by TextStreamer)."""

from __future__ import annotations

from typing import Callable

from transformers import TextStreamer


class CallbackStreamer(TextStreamer):
    """A ``TextStreamer`` that hands finalized text to ``on_text`` instead of printing it.

    The prompt is skipped; special tokens are dropped; ``on_text`` receives "" never.
    """

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)
