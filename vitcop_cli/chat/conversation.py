"""The history of one chat about one opened clip, as the Hugging Face chat messages a question is asked with.

Contract: :class:`Conversation` ``(clip)`` holds the answered turns (question, answer text) in order.
:meth:`Conversation.messages` ``(question)`` is the whole conversation ending with ``question``:
``clip.messages(first question)`` (``[system?, user: [visual, text]]``: the clip's visual opens the first user
turn, so every turn is asked on the clip's kept pruned prefix), then ``assistant`` / ``user`` text turns in
order; with no history it is exactly ``clip.messages(question)`` (what ``ask`` asks). :meth:`add` records an
answered turn, :meth:`reset` forgets them all (the clip is kept). A question that was not answered (failed or
cancelled) is never recorded.
"""

from __future__ import annotations

__all__ = ["Conversation"]


def _text_turn(role: str, text: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}


class Conversation:
    """Answered turns about ``clip`` (a :class:`~vitcop_cli.session.pruned_clip.PrunedClip`)."""

    def __init__(self, clip):
        self.clip = clip
        self.turns: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.turns)

    def messages(self, question: str) -> list[dict]:
        """The chat to ask ``question`` with: the history, then ``question`` as the last user turn."""
        if not self.turns:
            return self.clip.messages(question)
        (first_q, first_a), *rest = self.turns
        messages = [*self.clip.messages(first_q), _text_turn("assistant", first_a)]
        for q, a in rest:
            messages += [_text_turn("user", q), _text_turn("assistant", a)]
        return [*messages, _text_turn("user", question)]

    def add(self, question: str, answer: str) -> None:
        self.turns.append((question, answer))

    def reset(self) -> None:
        self.turns.clear()
