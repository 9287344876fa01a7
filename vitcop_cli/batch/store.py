"""The ``vitcop batch`` results file: one JSON line per job, appended, resumable.

Contract:

- Keys. A line's key (:data:`Key`, :func:`record_key`) is ``(video, prompt, model, preset, method)``,
  all strings (``prompt`` falls back to ``question`` for lines without one); a line without a
  complete key is not ours and is ignored.
- Reading. Only complete lines count: bytes after the last newline (a torn line, left by a kill
  mid-write) are reported, not parsed, and lines that are not JSON objects are skipped
  (:func:`read_results`, :func:`load_done_keys`, :func:`_scan`). Files are streamed, never
  loaded whole. For each key the successful (``error`` null) line, if any, else the last error
  line, is authoritative (:func:`_scan`); the summary needs only a small :class:`_Row` of it.
- Torn tail. A torn tail is "ours" (safe to cut off) when it is a prefix of, or starts with,
  :data:`_RECORD_START`, the way every line ``run_batch`` writes begins (``id`` is the first
  field of ``batch._record``).
- Path. :func:`check_out_path` accepts a new or regular file in an existing, writable folder that
  is not the questions file itself; anything else is an :class:`InputError`.
- Writing (:class:`_Output`). The file is opened for appending under an exclusive, non-blocking
  ``flock`` (a second writer gets an :class:`InputError`; no lock on Windows or on file systems
  without one). Each record is ASCII JSON written with ``os.write`` until complete, then
  ``os.fsync``'d before :meth:`_Output.append` returns, so a crash loses at most the line in
  flight. Write failures are :class:`RuntimeFailure`. Closing releases the lock.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError, RuntimeFailure

__all__ = [
    "Key",
    "check_out_path",
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
    key = (record.get("video"), prompt, record.get("model"), record.get("preset"), record.get("method"))
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
        except ValueError:
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
    return _Row(
        error=None if rec.get("error") is None else str(rec.get("error")),
        correct=correct if isinstance(correct, bool) else None,
        total_s=_num(_get(rec, "timings", "total_s")),
        n_visual=n_visual,
        kept=kept,
        ratio=ratio,
    )


_RECORD_START = b'{"id": '  # every line run_batch writes starts so


def _scan(path: Path) -> tuple[dict, int, bool]:
    """({key: authoritative _Row}, torn bytes, torn tail is ours): a successful line wins, else the last error."""
    final: dict = {}
    state: dict = {}
    for rec in _records(path, state):
        key = record_key(rec)
        if key is None:
            continue
        row, prev = _row(rec), final.get(key)
        if row.error is None or prev is None or prev.error is not None:
            final[key] = row
    tail = state["tail"]
    ours = tail.startswith(_RECORD_START) or _RECORD_START.startswith(tail)
    return final, state["torn"], ours


def check_out_path(out: str | os.PathLike, input_path: str | os.PathLike | None = None) -> Path:
    """Validate ``--out``: a new or regular file in an existing, writable folder, not the input itself."""
    p = Path(out)
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


class _Output:
    """The results file, opened for appending under an exclusive lock, torn tail cut off."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise InputError(f"--out {path}: cannot open for writing ({exc.strerror or exc})") from None
        try:
            self._lock()
        except BaseException:
            os.close(self.fd)
            raise

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"--out {self.path} is being written by another vitcop batch; wait for it, or give another --out"
            ) from None
        except OSError:
            return  # a file system without locks: go on unlocked

    def cut_torn_tail(self, torn: int) -> None:
        if torn:
            size = os.fstat(self.fd).st_size
            try:
                os.ftruncate(self.fd, size - torn)
                os.fsync(self.fd)
            except OSError as exc:
                raise RuntimeFailure(
                    f"cannot repair the torn last line of {self.path}: {exc.strerror or exc}"
                ) from None

    def end_line(self) -> None:
        try:
            os.write(self.fd, b"\n")
        except OSError as exc:
            raise RuntimeFailure(f"cannot write to {self.path}: {exc.strerror or exc}") from None

    def append(self, record: dict) -> None:
        data = (json.dumps(record) + "\n").encode("ascii")  # \u escapes: undecodable file names too
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
            os.fsync(self.fd)
        except OSError as exc:
            raise RuntimeFailure(f"cannot write to {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        try:
            os.close(self.fd)  # releases the lock
        except OSError:
            pass
