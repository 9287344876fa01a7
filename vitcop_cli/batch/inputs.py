"""What ``vitcop batch`` asks: the items, the multiple-choice prompt, and scoring an answer.

Contract:

- Items. :func:`read_folder` walks a folder recursively (sorted, hidden files and folders
  skipped, media recognised by extension: :data:`~vitcop_cli.video.VIDEO_EXTENSIONS` /
  ``IMAGE_EXTENSIONS``) and asks every question of every clip; media-named entries it cannot use
  (unlistable subfolder, a folder named ``x.mp4``, a broken link) are named in a note.
  :func:`read_jsonl` streams ``{"video", "question", "id"?, "options"?, "answer"?}`` lines
  (``video`` relative to the file); all bad lines (bad JSON or fields, not UTF-8, over
  :data:`MAX_LINE_BYTES`, a misspelt key) are reported together in one :class:`InputError`, other
  unknown keys in a note. ``items_from_*`` return just the items. A missing or unreadable clip is
  *not* an input error: it becomes that item's ``error`` line at run time. A :class:`BatchItem`
  validates itself on construction and resolves ``video`` to an absolute path.
- Names. :func:`printable` escapes control characters in names shown on a terminal.
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

from ..errors import InputError
from ..video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_media_file

__all__ = [
    "KNOWN_KEYS",
    "MAX_LINE_BYTES",
    "MC_INSTRUCTION",
    "BatchItem",
    "Inputs",
    "gold_letter",
    "items_from_folder",
    "items_from_jsonl",
    "mc_prompt",
    "parse_letter",
    "printable",
    "read_folder",
    "read_jsonl",
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


@dataclass
class Inputs:
    """What a folder or questions file yields: the items, plus one-line notes for the user.

    ``notes`` say what was skipped or ignored and why (unreadable subfolders, a folder named like a
    clip, unknown keys); the CLI prints them, so a batch never silently sees less than was given.
    """

    items: list[BatchItem]
    notes: list[str]


def _summarise(what: str, entries: list[tuple[str, str]], limit: int = 5) -> str:
    """One line: ``what N: a (reason); b (reason) ... and K more``."""
    shown = "; ".join(f"{printable(name)} ({reason})" for name, reason in entries[:limit])
    more = f"; and {len(entries) - limit} more" if len(entries) > limit else ""
    return f"{what} {len(entries)}: {shown}{more}"


def read_folder(folder: str | os.PathLike, questions: Sequence[str]) -> Inputs:
    """Every video / image under ``folder`` (recursive, sorted, hidden entries skipped) x every question.

    ``id`` is the clip's path relative to ``folder`` (``#2``, ``#3``, ... appended for the second and
    later questions when there are several). Entries that look like media but cannot be used (a
    subfolder that cannot be listed, a folder or other non-file named like a clip, a broken link) are
    listed in one note with their reasons; files with other extensions are not media and not noted.
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
    skipped: list[tuple[str, str]] = []

    def rel(path) -> str:
        try:
            return Path(path).relative_to(root).as_posix()
        except ValueError:
            return str(path)

    def unreadable(exc: OSError) -> None:
        skipped.append((rel(exc.filename) + "/", f"cannot list: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for d in dirnames:
            if is_media_file(d):  # a folder named like a clip: walked into, but not a clip itself
                skipped.append((rel(Path(dirpath) / d), "a folder, not a file"))
        for name in sorted(filenames):
            if _is_hidden(name) or not is_media_file(name):
                continue
            path = Path(dirpath) / name
            if path.is_file():
                files.append(path)
            elif path.is_symlink() and not path.exists():
                skipped.append((rel(path), "broken link"))
            else:
                skipped.append((rel(path), "not a regular file"))
    notes = [_summarise(f"skipped under {folder}:", sorted(skipped))] if skipped else []
    if not files:
        extra = f"; {notes[0]}" if notes else ""
        raise InputError(
            f"no video or image files found under {folder} (looked for "
            f"{', '.join(sorted(VIDEO_EXTENSIONS | IMAGE_EXTENSIONS))}){extra}"
        )
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    items = []
    for path in files:
        r = path.relative_to(root).as_posix()
        for i, q in enumerate(questions):
            items.append(BatchItem(video=str(path), question=q, id=r if i == 0 else f"{r}#{i + 1}"))
    return Inputs(items, notes)


def items_from_folder(folder: str | os.PathLike, questions: Sequence[str]) -> list[BatchItem]:
    """The items of :func:`read_folder` (its notes dropped)."""
    return read_folder(folder, questions).items


MAX_LINE_BYTES = 1 << 20  # a questions-file line longer than this (1 MiB) is an error for that line
KNOWN_KEYS = ("id", "video", "question", "options", "answer")
_MAX_REPORTED = 10  # bad lines named in the message; the rest are counted


def _lines(fh, limit: int):
    """(line number, raw bytes or None when longer than ``limit``) for each line; memory bounded by ``limit``."""
    lineno = 0
    while True:
        raw = fh.readline(limit + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line
                raw = fh.readline(1 << 16)
            yield lineno, None
            continue
        if len(raw.rstrip(b"\r\n")) > limit:
            yield lineno, None
            continue
        yield lineno, raw


def read_jsonl(path: str | os.PathLike) -> Inputs:
    """The items of a JSONL questions file; ``video`` paths are relative to the file's folder.

    Blank lines are skipped; ``id`` defaults to the line number. Every bad line is found in one pass
    and reported in one :class:`InputError` naming each line and why (not JSON, not an object,
    missing / empty ``video`` or ``question``, bad ``options`` / ``answer``, not UTF-8, longer than
    :data:`MAX_LINE_BYTES`, an unknown key that looks like a misspelt known one). Other unknown keys
    are ignored and named in a note. The file is streamed: memory stays bounded by the line limit.
    """
    import difflib

    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {path}; check the path")
    if not p.is_file():
        raise InputError(f"{path} is not a regular file; give a folder or a JSONL questions file")
    base = p.resolve().parent
    items: list[BatchItem] = []
    bad: list[tuple[int, str]] = []
    unknown: dict[str, list[int]] = {}
    try:
        fh = open(p, "rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for lineno, raw in _lines(fh, MAX_LINE_BYTES):
            if raw is None:
                bad.append((lineno, f"longer than {MAX_LINE_BYTES} bytes"))
                continue
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad.append((lineno, f"not UTF-8 text (byte {exc.start + 1})"))
                continue
            if not line.strip():
                continue
            try:
                items.append(_item(json.loads(line), lineno, base, unknown))
            except json.JSONDecodeError as exc:
                bad.append((lineno, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            except InputError as exc:
                bad.append((lineno, str(exc)))
    for key, lines in unknown.items():
        close = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.75)
        if close:
            bad.extend((n, f'unknown key "{printable(key)}" (did you mean "{close[0]}"?)') for n in lines)
    if bad:
        bad.sort()
        shown = "; ".join(f"line {n}: {reason}" for n, reason in bad[:_MAX_REPORTED])
        more = f"; and {len(bad) - _MAX_REPORTED} more" if len(bad) > _MAX_REPORTED else ""
        what = "1 bad line" if len(bad) == 1 else f"{len(bad)} bad lines"
        raise InputError(f"{path}: {what}: {shown}{more}")
    if not items:
        raise InputError(f"{path} holds no questions (one JSON object a line)")
    notes = []
    ignored = {k: v for k, v in unknown.items() if not difflib.get_close_matches(k, KNOWN_KEYS, n=1, cutoff=0.75)}
    if ignored:
        parts = [f'"{printable(k)}" (line{"s" if len(v) > 1 else ""} {_line_list(v)})' for k, v in ignored.items()]
        notes.append(f"{path}: ignored unknown key{'s' if len(parts) > 1 else ''} {', '.join(parts)}; "
                     f"known keys: {', '.join(KNOWN_KEYS)}")
    return Inputs(items, notes)


def _line_list(lines: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(n) for n in lines[:limit])
    return shown + (f" and {len(lines) - limit} more" if len(lines) > limit else "")


def _item(obj, lineno: int, base: Path, unknown: dict[str, list[int]]) -> BatchItem:
    if not isinstance(obj, dict):
        raise InputError('expected a JSON object like {"video": ..., "question": ...}')
    for key in obj:
        if key not in KNOWN_KEYS:
            unknown.setdefault(str(key), []).append(lineno)
    for name in ("video", "question"):
        if name not in obj:
            raise InputError(f'missing "{name}"')
    video = obj["video"]
    if not isinstance(video, str) or not video.strip():
        raise InputError('"video" must be a non-empty path')
    video_path = Path(video).expanduser()
    if not video_path.is_absolute():
        video_path = base / video_path
    return BatchItem(video=str(video_path), question=obj["question"], id=obj.get("id", lineno),
                     options=obj.get("options"), answer=obj.get("answer"))


def items_from_jsonl(path: str | os.PathLike) -> list[BatchItem]:
    """The items of :func:`read_jsonl` (its notes dropped)."""
    return read_jsonl(path).items


def printable(text) -> str:
    """``text`` with control and other non-printable characters escaped (``\\n``, ``\\x1b``, ``\\u2028``), so
    a file name cannot split or recolour a progress line."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


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
