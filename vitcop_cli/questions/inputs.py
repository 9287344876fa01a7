"""What ``vitcop batch`` (and ``profile --answers``) asks: the items of a folder or a questions file.

Contract:

- Items. :func:`read_folder` walks a folder recursively (sorted, hidden files and folders
  skipped, media recognised by extension: :data:`~vitcop_cli.media.video.VIDEO_EXTENSIONS` /
  ``IMAGE_EXTENSIONS``) and asks every question of every clip; media-named entries it cannot use
  (unlistable subfolder, a folder named ``x.mp4``, a broken link) are named in a note.
  :func:`read_jsonl` streams ``{"video", "question", "id"?, "options"?, "answer"?}`` lines
  (``video`` relative to the file); all bad lines (bad JSON or fields, JSON that Python cannot hold: an
  integer over 4,300 digits, nesting too deep; a NUL in ``video``; not UTF-8, over
  :data:`MAX_LINE_BYTES`, a misspelt key) are reported together in one :class:`InputError`, other
  unknown keys in a note. ``items_from_*`` return just the items. A missing or unreadable clip is
  *not* an input error: it becomes that item's ``error`` line at run time. A :class:`BatchItem`
  validates itself on construction and resolves ``video`` to an absolute path.
- Names. :func:`printable` escapes control characters in names shown on a terminal.
- Multiple choice and scoring: :mod:`.scoring` (an item with ``options`` is asked its ``mc_prompt``).

Pure functions of their arguments and the file system; no model, no output file.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from ..media.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_media_file, shown_path
from .scoring import LETTERS, gold_letter, mc_prompt

__all__ = [
    "KNOWN_KEYS",
    "MAX_LINE_BYTES",
    "BatchItem",
    "Inputs",
    "items_from_folder",
    "items_from_jsonl",
    "printable",
    "read_folder",
    "read_jsonl",
]


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
        if "\0" in os.fspath(self.video):
            raise InputError('"video" contains a NUL character, which no file name can')
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
                items.append(_item(_json_line(line), lineno, base, unknown))
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


def _json_line(line: str):
    """The JSON value of one line; InputError (one line) for anything ``json`` refuses, including what it
    refuses with other exceptions: an integer over Python's 4,300-digit limit, nesting deeper than the
    interpreter's recursion limit."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError:  # int(): "Exceeds the limit (4300 digits) for integer string conversion"
        raise InputError(f"not usable JSON (a number with more than {sys.get_int_max_str_digits():,} digits)") from None
    except RecursionError:
        raise InputError("not usable JSON (nested too deeply)") from None


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
    """``text`` with control and other non-printable characters escaped (``\\n``, ``\\x1b``, ``\\u2028``; an
    undecodable byte of a file name as ``\\xff``), so a file name cannot split or recolour a progress line."""
    return shown_path(str(text))
