"""The answer text a client sees, streamed or not: one definition for both.

Contract: :class:`AnswerText` receives the decoded text of the generated tokens piece by piece
(``feed``) and releases only text that can no longer change, so that the concatenation of
everything released by ``feed`` and ``finish`` is exactly :func:`final_answer` of the whole text:

- cut before the first occurrence of any stop string (OpenAI: the stop sequence is not returned);
- then stripped of leading and trailing whitespace (as ``AskResult.answer`` is).

While streaming, a trailing run of whitespace and any suffix that could be the start of a stop
string are held back until more text decides them; so is the text after a stop string while another
one that would start earlier may still complete. ``stopped`` tells whether a stop string cut the
text (decided), ``found`` whether one has appeared. Pure string code: no model, no I/O.

Cost: incremental. Each stop string is matched by a streaming Knuth-Morris-Pratt automaton, so a
``feed`` of ``n`` characters costs at most ``2 n + (longest stop - 1)`` steps per stop string,
whatever was fed before (``steps`` counts them), and the text it keeps is the held-back suffix
(shorter than the longest stop string) plus the held-back whitespace. The text fed so far is never
searched again; building the automata costs the stop strings' total length once.
"""

from __future__ import annotations


def final_answer(raw: str, stops: list[str]) -> tuple[str, bool]:
    """(answer, stopped): ``raw`` cut before its first stop string, then stripped."""
    cut = _first_stop(raw, stops)
    return (raw if cut is None else raw[:cut]).strip(), cut is not None


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def _failure(stop: str) -> list[int]:
    """KMP failure table: ``f[i]`` = length of the longest proper prefix of ``stop[:i+1]`` that is also its suffix."""
    f, k = [0] * len(stop), 0
    for i in range(1, len(stop)):
        while k and stop[i] != stop[k]:
            k = f[k - 1]
        if stop[i] == stop[k]:
            k += 1
        f[i] = k
    return f


class _StopMatcher:
    """One stop string matched over a stream. ``state``: length of the longest suffix of the text fed so
    far that is a prefix of ``stop`` (below ``len(stop)`` until ``matched``); ``steps``: work done."""

    def __init__(self, stop: str):
        self.stop, self.state, self.steps, self.matched = stop, 0, 0, False
        self._fail = _failure(stop)

    def advance(self, piece: str) -> int | None:
        """Consume ``piece``; the index in ``piece`` where the first whole match ends (then ``matched``, and
        the matcher stops: later matches start later), else ``None``."""
        stop, fail, k = self.stop, self._fail, self.state
        steps = 0
        for i, c in enumerate(piece):
            while k and stop[k] != c:
                k = fail[k - 1]
                steps += 1
            if stop[k] == c:
                k += 1
            steps += 1
            if k == len(stop):
                self.steps, self.state, self.matched = self.steps + steps, 0, True
                return i
        self.steps, self.state = self.steps + steps, k
        return None


class AnswerText:
    def __init__(self, stops: list[str] | None = None):
        self.stops = [s for s in (stops or []) if s]
        self.stopped = False
        self._matchers = [_StopMatcher(s) for s in self.stops]
        self._fed = 0  # characters fed so far
        self._held = ""  # the fed text from position ``_fed - len(_held)`` on, not yet decided
        self._cut: int | None = None  # start of the earliest stop string seen so far (a position in the fed text)
        self._blank: list[str] = []  # whitespace after the last released text, released once text follows it
        self._parts: list[str] = []  # released pieces

    @property
    def found(self) -> bool:
        """Whether a stop string has appeared (``stopped`` may wait for one that would start earlier)."""
        return self._cut is not None

    def feed(self, piece: str) -> str:
        """Text that is now final (possibly "")."""
        if self.stopped or not piece:
            return ""
        start = self._fed - len(self._held)  # position of self._held[0]
        for m in self._matchers:
            if not m.matched:
                end = m.advance(piece)
                if end is not None:
                    at = self._fed + end + 1 - len(m.stop)
                    self._cut = at if self._cut is None else min(self._cut, at)
        self._fed += len(piece)
        text = self._held + piece
        # the earliest a stop string still being matched may start: text before it is decided
        open_at = self._fed - max((m.state for m in self._matchers if not m.matched), default=0)
        if self._cut is not None and self._cut <= open_at:  # no stop string can start before the cut any more
            return self._stop(text[: self._cut - start])
        upto = open_at if self._cut is None else min(self._cut, open_at)
        self._held = text[upto - start:]
        return self._release(text[: upto - start], final=False)

    def finish(self) -> str:
        """The rest of the answer, once generation has ended."""
        if self.stopped:
            return ""
        if self._cut is not None:
            return self._stop(self._held[: self._cut - (self._fed - len(self._held))])
        rest, self._held = self._held, ""
        return self._release(rest, final=True)

    @property
    def text(self) -> str:
        """Everything released so far."""
        return "".join(self._parts)

    @property
    def steps(self) -> int:
        """Matching work done so far (automaton steps over all stop strings)."""
        return sum(m.steps for m in self._matchers)

    def _stop(self, before: str) -> str:
        self.stopped, self._held = True, ""
        return self._release(before, final=True)

    def _release(self, decided: str, *, final: bool) -> str:
        """Append ``decided`` (text no stop string can cut any more) to the answer; return what is released:
        leading whitespace of the answer is dropped, trailing whitespace held until text follows (or
        dropped when ``final``)."""
        if not self._parts:
            decided = decided.lstrip()
        core = decided.rstrip()
        if not core:
            if final:
                self._blank.clear()
            elif decided:  # (always "" before the first release: leading whitespace is dropped)
                self._blank.append(decided)
            return ""
        out = "".join(self._blank) + core
        self._blank = [] if final else [decided[len(core):]]
        self._parts.append(out)
        return out
