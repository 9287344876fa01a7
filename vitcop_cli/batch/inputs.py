"""What ``vitcop batch`` asks: the items, the multiple-choice prompt, and scoring an answer.

Contract:

- Items. :func:`items_from_folder` walks a folder recursively (sorted, hidden files and folders
  skipped, media recognised by extension: :data:`~vitcop_cli.video.VIDEO_EXTENSIONS` /
  ``IMAGE_EXTENSIONS``) and asks every question of every clip. :func:`items_from_jsonl` reads
  ``{"video", "question", "id"?, "options"?, "answer"?}`` lines (``video`` relative to the file;
  other fields are ignored); a malformed line is an :class:`InputError` naming the line. A missing
  or unreadable clip is *not* an input error: it becomes that item's ``error`` line at run time.
  A :class:`BatchItem` validates itself on construction and resolves ``video`` to an absolute path.
- Multiple choice. An item with ``options`` is asked :func:`mc_prompt` (question, ``A. ...`` lines,
  then :data:`MC_INSTRUCTION`); the model's letter is read back with :func:`parse_letter`. The gold
  ``answer`` may be a letter (``"B"``, ``"(b)"``) or an option's text and is stored as its letter
  (:func:`gold_letter`).
- Scoring (:func:`_score`, used for each result line). ``correct`` is ``predicted == expected`` for
  multiple choice, a case- and punctuation-insensitive exact match for an open question with an
  ``answer``, else ``None``; ``predicted`` is the parsed letter (``None`` for open questions).

Pure functions of their arguments and the file system; no model, no output file.
"""

from __future__ import annotations

import json
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import InputError
from .video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_media_file

__all__ = [
    "MC_INSTRUCTION",
    "BatchItem",
    "gold_letter",
    "items_from_folder",
    "items_from_jsonl",
    "mc_prompt",
    "parse_letter",
]

MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
LETTERS = string.ascii_uppercase


# ---------------------------------------------------------------------------------------------
# Items
# ---------------------------------------------------------------------------------------------


@dataclass
class BatchItem:
    """One (clip, question). ``video`` is resolved to an absolute path; ``answer`` is the gold answer."""

    video: str
    question: str
    id: str | int | None = None
    options: list[str] | None = None
    answer: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.video, (str, os.PathLike)) or not os.fspath(self.video).strip():
            raise InputError('"video" must be a non-empty path')
        path = Path(os.fspath(self.video)).expanduser()
        try:
            self.video = str(path.resolve())
        except (OSError, RuntimeError):  # a symlink loop: keep it absolute, unresolved
            self.video = str(path.absolute())
        if not isinstance(self.question, str) or not self.question.strip():
            raise InputError('"question" must be a non-empty string')
        if self.id is not None and (isinstance(self.id, bool) or not isinstance(self.id, (str, int))):
            raise InputError(f'"id" must be a string or an integer, got {self.id!r}')
        if self.options is not None:
            opts = self.options
            if not isinstance(opts, list) or not all(isinstance(o, str) and o.strip() for o in opts):
                raise InputError('"options" must be a list of non-empty strings')
            if not 2 <= len(opts) <= len(LETTERS):
                raise InputError(f'"options" must hold 2 to {len(LETTERS)} choices, got {len(opts)}')
            self.options = [o.strip() for o in opts]
        if self.answer is not None:
            if not isinstance(self.answer, str) or not self.answer.strip():
                raise InputError('"answer" must be a non-empty string (a letter, or the option text)')
            if self.options is not None and gold_letter(self.answer, self.options) is None:
                raise InputError(
                    f'"answer" {self.answer!r} is neither an option letter '
                    f"(A-{LETTERS[len(self.options) - 1]}) nor the text of an option"
                )

    @property
    def prompt(self) -> str:
        """The text sent to the model: :func:`mc_prompt` for multiple choice, else the question."""
        return mc_prompt(self.question, self.options) if self.options else self.question.strip()

    @property
    def expected(self) -> str | None:
        """The gold answer: its letter for multiple choice, else as given (``None`` without one)."""
        if self.answer is None:
            return None
        return gold_letter(self.answer, self.options) if self.options else self.answer.strip()


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def items_from_folder(folder: str | os.PathLike, questions: Sequence[str]) -> list[BatchItem]:
    """Every video / image under ``folder`` (recursive, sorted, hidden entries skipped) x every question.

    ``id`` is the clip's path relative to ``folder`` (``#2``, ``#3``, ... appended for the second and
    later questions when there are several).
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{folder} is not a folder")
    questions = [q.strip() for q in questions if isinstance(q, str)]
    if not questions:
        raise InputError(f"{folder} is a folder: give the question to ask about every clip with --question")
    if any(not q for q in questions):
        raise InputError("--question is empty")
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=None, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not _is_hidden(name) and is_media_file(name) and path.is_file():
                files.append(path)
    if not files:
        raise InputError(
            f"no video or image files found under {folder} (looked for "
            f"{', '.join(sorted(VIDEO_EXTENSIONS | IMAGE_EXTENSIONS))})"
        )
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    items = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        for i, q in enumerate(questions):
            items.append(BatchItem(video=str(path), question=q, id=rel if i == 0 else f"{rel}#{i + 1}"))
    return items


def items_from_jsonl(path: str | os.PathLike) -> list[BatchItem]:
    """The items of a JSONL questions file; ``video`` paths are relative to the file's folder.

    Blank lines are skipped; ``id`` defaults to the line number. Raises :class:`InputError` naming
    the line for a malformed one (not JSON, not an object, missing / empty ``video`` or
    ``question``, bad ``options`` / ``answer``).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {path}; check the path")
    if not p.is_file():
        raise InputError(f"{path} is not a regular file; give a folder or a JSONL questions file")
    base = p.resolve().parent
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(
            f"{path} is not a UTF-8 text file; give a JSONL questions file (one JSON object a line)"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    items = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object like {{\"video\": ..., \"question\": ...}}")
        for name in ("video", "question"):
            if name not in obj:
                raise InputError(f'{where}: missing "{name}"')
        video = obj["video"]
        if not isinstance(video, str) or not video.strip():
            raise InputError(f'{where}: "video" must be a non-empty path')
        video_path = Path(video).expanduser()
        if not video_path.is_absolute():
            video_path = base / video_path
        try:
            items.append(
                BatchItem(
                    video=str(video_path),
                    question=obj["question"],
                    id=obj.get("id", lineno),
                    options=obj.get("options"),
                    answer=obj.get("answer"),
                )
            )
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
    if not items:
        raise InputError(f"{path} holds no questions (one JSON object a line)")
    return items


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------


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


def _score(item: BatchItem, answer: str) -> tuple[str | None, bool | None]:
    """(predicted letter, correct) for the model's ``answer`` to ``item``."""
    if item.options:
        predicted = parse_letter(answer, item.options)
        expected = item.expected
        return predicted, (None if expected is None else predicted == expected)
    if item.answer is not None:
        return None, _norm(answer) == _norm(item.answer)
    return None, None
