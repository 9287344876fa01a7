"""The ``vitcop batch`` results: one JSON line per job, appended to part files, merged into ``--out``.

Contract:

- Keys. A line's key (:data:`Key`, :func:`record_key`) is ``(video, prompt, model, preset, method)``,
  all strings (``prompt`` falls back to ``question`` for lines without one): resolved clip path,
  text sent, :func:`vitcop_cli.api.model_identity`, :attr:`pruning.presets.Preset.label` (so a
  custom preset with other values never matches a built-in's results) and method (``"none"`` for
  the unpruned preset, which is method-independent; older lines with preset ``none`` and any method
  read as that key). A line without a complete key is not ours and is ignored.
- Reading. Only complete lines count: bytes after the last newline (a torn line, left by a kill
  mid-write) are reported, not parsed, and lines that are not JSON objects are skipped
  (:func:`read_results`, :func:`load_done_keys`, :func:`scan`). Files are streamed, never
  loaded whole. For each key the first successful (``error`` null) line, if any, else the last
  error line, is authoritative; the summary needs only a small :class:`_Row` of it (its figures, and
  whether it ran on a reused prefix: ``prefix.reused`` / ``prefix.saved_s``).
- Torn tail. A torn tail is "ours" (safe to cut off) when it is a prefix of, or starts with,
  :data:`_RECORD_START`, the way every line ``run_batch`` writes begins (``id`` is the first
  field of ``runner._record``).
- Path. :func:`check_out_path` accepts a new or regular file in an existing, writable folder that
  is not the questions file itself; anything else is an :class:`InputError`. It returns the resolved path
  (symbolic links followed, :func:`os.path.realpath`): results, part files and the lock live next to the
  link's target, so a run through a link and one on the real path share one lock, and the merge replaces
  the target, never the link.
- Writing (:class:`PartWriter`). Each rank appends to its own part file (:mod:`.merge` names and
  merges them); nothing two processes write is shared. Each record is ASCII JSON written with
  ``os.write`` until complete, then ``os.fsync``'d before :meth:`PartWriter.append` returns, so a
  crash loses at most the line in flight. Write failures are :class:`RuntimeFailure`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError, RuntimeFailure

__all__ = [
    "Key",
    "PartWriter",
    "check_out_path",
    "scan",
    "load_done_keys",
    "read_results",
    "record_key",
]

Key = tuple  # (video, prompt, model, preset, method), all str


def record_key(record: dict) -> Key | None:
    """``(video, prompt, model, preset, method)`` of an output line, or ``None`` if it is not one of ours."""
    if not isinstance(record, dict):
        return None
    prompt = record.get("prompt", record.get("question"))
    preset, method = record.get("preset"), record.get("method")
    if preset == "none" and isinstance(method, str):
        method = "none"  # method-independent; older files recorded the method it ran under
    key = (record.get("video"), prompt, record.get("model"), preset, method)
    return key if all(isinstance(k, str) for k in key) else None


def _iter_lines(path: Path) -> Iterator[tuple[bytes, bool]]:
    """(line without newline, complete) for every line of ``path``; only the last can be incomplete."""
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.endswith(b"\n"):
                yield raw[:-1], True
            else:
                yield raw, False


def _records(path: Path, state: dict) -> Iterator[dict]:
    """The complete JSON-object lines of ``path``, streamed; ``state`` gets ``torn`` (bytes) and ``tail``."""
    state.update(torn=0, tail=b"")
    if not path.is_file():
        return
    for raw, complete in _iter_lines(path):
        if not complete:
            state.update(torn=len(raw), tail=raw)
            return
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, or JSON Python cannot hold
            continue
        if isinstance(obj, dict):
            yield obj


def read_results(path: str | os.PathLike) -> tuple[list[dict], int]:
    """(every complete JSON-object line of ``path``, bytes of a torn last line) ; ``([], 0)`` if absent.

    A torn last line (no newline at the end of the file) is left out; so are lines that are not
    JSON objects.
    """
    state: dict = {}
    records = list(_records(Path(path), state))
    return records, state["torn"]


def load_done_keys(path: str | os.PathLike) -> set[Key]:
    """Keys with a successful (``error`` null) line in ``path``; a torn last line is ignored."""
    done = set()
    for rec in read_results(path)[0]:
        key = record_key(rec)
        if key is not None and rec.get("error") is None:
            done.add(key)
    return done


@dataclass
class _Row:
    """What the summary needs of one output line (whole lines can be large: timestamps, token ids)."""

    error: str | None
    correct: bool | None
    total_s: float | None
    n_visual: float | None
    kept: float | None
    ratio: float | None
    reused: bool = False  # prefix.reused: answered on a kept prefix from an earlier job
    saved_s: float = 0.0  # prefix.saved_s when reused


def _get(d: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(d, dict):
            return None
        d = d.get(name)
    return d


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _row(rec: dict) -> _Row:
    n_visual = _num(_get(rec, "tokens", "visual"))
    kept = _num(_get(rec, "pruning", "layer_averaged_visual"))
    ratio = _num(_get(rec, "pruning", "layer_averaged_ratio"))
    if kept is None and rec.get("error") is None and isinstance(rec.get("answer"), str):
        kept, ratio = n_visual, (1.0 if n_visual else None)  # no pruning report: nothing pruned
    correct = rec.get("correct")
    reused = _get(rec, "prefix", "reused") is True and rec.get("error") is None
    return _Row(
        error=None if rec.get("error") is None else str(rec.get("error")),
        correct=correct if isinstance(correct, bool) else None,
        total_s=_num(_get(rec, "timings", "total_s")),
        n_visual=n_visual,
        kept=kept,
        ratio=ratio,
        reused=reused,
        saved_s=(_num(_get(rec, "prefix", "saved_s")) or 0.0) if reused else 0.0,
    )


_RECORD_START = b'{"id": '  # every line run_batch writes starts so


def _tail_is_ours(tail: bytes) -> bool:
    return tail.startswith(_RECORD_START) or _RECORD_START.startswith(tail)


def _better(row: _Row, prev: _Row | None) -> bool:
    """Whether ``row`` replaces ``prev`` as a key's authoritative line: the first success wins, else the last error."""
    return prev is None or (prev.error is not None)


def scan(paths) -> dict:
    """{key: authoritative :class:`_Row`} over the complete lines of ``paths``, in order."""
    final: dict = {}
    for path in paths:
        state: dict = {}
        for rec in _records(Path(path), state):
            key = record_key(rec)
            if key is None:
                continue
            if _better(_row(rec), final.get(key)):
                final[key] = _row(rec)
    return final


def _scan(path: Path) -> tuple[dict, int, bool]:
    """({key: authoritative _Row}, torn bytes, torn tail is ours) of one file."""
    final: dict = {}
    state: dict = {}
    for rec in _records(path, state):
        key = record_key(rec)
        if key is None:
            continue
        if _better(_row(rec), final.get(key)):
            final[key] = _row(rec)
    return final, state["torn"], _tail_is_ours(state["tail"])


def check_out_path(out: str | os.PathLike, input_path: str | os.PathLike | None = None) -> Path:
    """Validate ``--out``: a new or regular file in an existing, writable folder, not the input itself.
    Returns it resolved (symbolic links followed, a dangling one to the file it would create)."""
    p = Path(os.path.realpath(out))
    if p.is_dir():
        raise InputError(f"--out {out} is a directory; give the path of a .jsonl file to write results into")
    if p.exists() and not p.is_file():
        raise InputError(f"--out {out} is not a regular file")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"--out {out}: folder {parent} does not exist")
    if input_path is not None and p.exists() and Path(input_path).is_file():
        try:
            same = os.path.samefile(p, input_path)
        except OSError:
            same = False
        if same:
            raise InputError(f"--out {out} is the questions file itself; give another file for the results")
    if not os.access(p if p.exists() else parent, os.W_OK):
        raise InputError(f"--out {out}: permission denied; check the permissions or give another path")
    return p


class PartWriter:
    """One rank's part file, opened for appending (created on the first line); every line fsync'd."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None
        self.lines = 0

    def _open(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise RuntimeFailure(f"cannot write next to --out: {self.path}: {exc.strerror or exc}") from None

    def append(self, record: dict) -> None:
        data = (json.dumps(record) + "\n").encode("ascii")  # \u escapes: undecodable file names too
        if self.fd is None:
            self._open()
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
            os.fsync(self.fd)
        except OSError as exc:
            raise RuntimeFailure(f"cannot write to {self.path}: {exc.strerror or exc}") from None
        self.lines += 1

    def close(self) -> None:
        if self.fd is None:
            return
        try:
            os.close(self.fd)
        except OSError:
            pass
        self.fd = None
