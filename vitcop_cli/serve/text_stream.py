"""The answer text a client sees, streamed or not: one definition for both.

Contract: :class:`AnswerText` receives the decoded text of the generated tokens piece by piece
(``feed``) and releases only text that can no longer change, so that the concatenation of
everything released by ``feed`` and ``finish`` is exactly :func:`final_answer` of the whole text:

- cut before the first occurrence of any stop string (OpenAI: the stop sequence is not returned);
- then stripped of leading and trailing whitespace (as ``AskResult.answer`` is).

While streaming, a trailing run of whitespace and any suffix that could be the start of a stop
string are held back until more text decides them. ``stopped`` tells whether a stop string cut the
text. Pure string code: no model, no I/O.
"""

from __future__ import annotations


def final_answer(raw: str, stops: list[str]) -> tuple[str, bool]:
    """(answer, stopped): ``raw`` cut before its first stop string, then stripped."""
    cut = _first_stop(raw, stops)
    return (raw if cut is None else raw[:cut]).strip(), cut is not None


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


class AnswerText:
    def __init__(self, stops: list[str] | None = None):
        self.stops = [s for s in (stops or []) if s]
        self.stopped = False
        self._raw = ""
        self._released = ""

    def feed(self, piece: str) -> str:
        """Text that is now final (possibly "")."""
        if self.stopped:
            return ""
        self._raw += piece
        return self._release(final=False)

    def finish(self) -> str:
        """The rest of the answer, once generation has ended."""
        return self._release(final=True)

    @property
    def text(self) -> str:
        """Everything released so far."""
        return self._released

    def _release(self, *, final: bool) -> str:
        cut = _first_stop(self._raw, self.stops)
        if cut is not None:
            self.stopped = True
            final = True
        text = self._raw if cut is None else self._raw[:cut]
        if not final:
            text = text[: len(text) - self._held(text)].rstrip()
        text = text.strip()
        if not text.startswith(self._released):  # cannot happen: released text is final by construction
            raise AssertionError("streamed answer text changed after release")
        out = text[len(self._released):]
        self._released = text
        return out

    def _held(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best
