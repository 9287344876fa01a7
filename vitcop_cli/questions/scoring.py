"""Multiple choice and scoring: the prompt an item with options is asked, and how an answer is marked.

Contract:

- An item with ``options`` is asked :func:`mc_prompt` (question, ``A. ...`` lines, then
  :data:`MC_INSTRUCTION`); the model's letter is read back with :func:`parse_letter`. The gold
  ``answer`` may be a letter (``"B"``, ``"(b)"``) or an option's text and is stored as its letter
  (:func:`gold_letter`).
- :func:`score` ``(item, answer) -> (predicted, correct)``: ``correct`` is ``predicted == expected`` for
  multiple choice, a case- and punctuation-insensitive exact match for an open question with an
  ``answer``, else ``None``; ``predicted`` is the parsed letter (``None`` for open questions).

Pure functions of their arguments.
"""

from __future__ import annotations

import re
import string
from typing import Sequence

from ..errors import InputError

MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
LETTERS = string.ascii_uppercase


def mc_prompt(question: str, options: Sequence[str]) -> str:
    """The standard multiple-choice prompt: question, ``A. ...`` one option a line, then the instruction."""
    if not 1 <= len(options) <= len(LETTERS):
        raise InputError(f"a multiple-choice question needs 1 to {len(LETTERS)} options, got {len(options)}")
    lines = [question.strip()]
    lines += [f"{LETTERS[i]}. {str(opt).strip()}" for i, opt in enumerate(options)]
    lines.append(MC_INSTRUCTION)
    return "\n".join(lines)


def _norm(text: str) -> str:
    """Lower case, single spaces, no surrounding quotes / brackets / final punctuation."""
    text = " ".join(str(text).lower().split())
    return text.strip(" \t\"'`*()[]{}<>").rstrip(".!?;:,").strip(" \"'`*")


_LETTER_ONLY = re.compile(r"^\s*[(\[]?\s*([A-Za-z])\s*[)\]]?\s*[.:)]?\s*$")
_LEADING_LETTER = re.compile(r"^\W*?(?:[(\[]\s*)?([A-Z])(?:\s*[)\]])?(?=$|[\s.,:;!?)\]])")
_ANSWER_PREFIX = re.compile(
    r"^\W*(?:(?:the|my)\s+)?(?:(?:correct|best|right|final)\s+)?(?:answer|option|choice)\b"
    r"(?:\s+(?:is|would\s+be|should\s+be))?\s*[:\-]?\s*",
    re.IGNORECASE,
)
_ANSWER_LETTER = re.compile(
    r"(?<![A-Za-z])(?i:answer|option|choice)\b(?:\s+(?:is|would\s+be|should\s+be))?"
    r"\s*[:\-]?\s*[(\[]?\s*([A-Z])(?![A-Za-z0-9])"
)
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])")


def gold_letter(answer: str, options: Sequence[str]) -> str | None:
    """The letter a gold ``answer`` stands for: a letter (``"B"``, ``"(b)"``, ``"B."``) or an option's text."""
    valid = LETTERS[: len(options)]
    m = _LETTER_ONLY.match(str(answer))
    if m and m.group(1).upper() in valid:
        return m.group(1).upper()
    norm = _norm(answer)
    for i, opt in enumerate(options):
        if norm == _norm(opt):
            return valid[i]
    return None


def parse_letter(text: str | None, options: Sequence[str]) -> str | None:
    """The option letter a model's answer picks, or ``None``.

    In order: the answer is an option's text; the answer is (or starts with) a letter: ``"B"``,
    ``"(B)"``, ``"B."``, ``"B) ..."``, ``"b"``, also after "Answer:" / "The answer is"; "answer is
    C" anywhere; exactly one option's text appears in it (an option contained in a longer matching
    option counts as the longer one); the first standalone capital letter that names an option.
    Letters outside the options are ignored (``"I think B"`` with four options gives ``B``).
    Heuristic: ``"A red circle"`` reads as ``A``.
    """
    if not text or not options:
        return None
    valid = LETTERS[: len(options)]
    s = str(text).strip()
    norm = _norm(s)
    for i, opt in enumerate(options):
        if norm == _norm(opt):
            return valid[i]
    for body in (s, _ANSWER_PREFIX.sub("", s, count=1)):
        m = _LETTER_ONLY.match(body)
        if m and m.group(1).upper() in valid:
            return m.group(1).upper()
        m = _LEADING_LETTER.match(body)
        if m and m.group(1) in valid:
            return m.group(1)
    for m in _ANSWER_LETTER.finditer(s):
        if m.group(1) in valid:
            return m.group(1)
    hits = []
    for i, opt in enumerate(options):
        o = _norm(opt)
        if o and re.search(r"(?<!\w)" + re.escape(o) + r"(?!\w)", norm):
            hits.append((i, o))
    hits = [(i, o) for i, o in hits if not any(o != o2 and o in o2 for _, o2 in hits)]
    if len({o for _, o in hits}) == 1:
        return valid[hits[0][0]]
    for m in _STANDALONE.finditer(s):
        if m.group(1) in valid:
            return m.group(1)
    return None


def score(item, answer: str) -> tuple[str | None, bool | None]:
    """(predicted letter, correct) for the model's ``answer`` to ``item`` (a :class:`~.inputs.BatchItem`: its
    ``options``, gold letter ``expected`` and open ``answer``)."""
    if item.options:
        predicted = parse_letter(answer, item.options)
        expected = item.expected
        return predicted, (None if expected is None else predicted == expected)
    if item.answer is not None:
        return None, _norm(answer) == _norm(item.answer)
    return None, None
