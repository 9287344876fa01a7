"""Part files and the merge into ``--out``: exactly one line per key, crash-safe at every step.

Contract:

- Parts. Rank R of a run appends its lines to ``<out>.part-RRRRR`` (:func:`part_path`); a
  single-process run is rank 0. :func:`find_parts` lists every part next to ``--out``, whatever
  rank count wrote it.
- :func:`merge` (called by rank 0 only, under the ``--out`` lock) reads ``--out`` then the parts
  in rank order and writes one file holding, for every key, exactly one line: the first
  successful line if there is one, else the last error line (so a retried failure replaces its
  error line), at the position where the key first appeared. Lines of ``--out`` that are not ours
  stay where they were; a torn last line is dropped when it is ours (a kill mid-write) and kept,
  completed by a newline, when it is not. Part lines that are not ours and torn part tails are
  dropped.
- Atomic. The result is written to ``<out>.merging``, flushed and fsync'd, renamed over ``--out``
  and the folder fsync'd; only then are the parts removed. A crash before the rename leaves
  ``--out`` and the parts as they were; a crash after it leaves parts whose lines are already in
  ``--out``, which the next merge drops as repeats. Either way a re-run loses and duplicates
  nothing. When there are no parts and ``--out`` needs no repair, nothing is written.
- Memory. Two streaming passes; only (offset, length) per line and the keys are held, never the
  lines. Returns :class:`MergeResult`: the authoritative :class:`~.store._Row` per key (for the
  summary) and what the parts held per (method, preset) (this run's counts: successes, failures,
  answers on a reused prefix and the seconds those saved).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, RuntimeFailure
from .store import _better, _row, _tail_is_ours, record_key

__all__ = ["MergeResult", "find_parts", "merge", "part_path"]

_PART = ".part-"


def part_path(out: str | os.PathLike, rank: int) -> Path:
    """``<out>.part-RRRRR``: the file rank ``rank`` appends to."""
    out = Path(out)
    return out.with_name(f"{out.name}{_PART}{rank:05d}")


def find_parts(out: str | os.PathLike) -> list[Path]:
    """Every part file of ``out`` (any rank count), sorted by rank."""
    out = Path(out)
    folder = out.parent if str(out.parent) else Path(".")
    prefix = out.name + _PART
    found = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        suffix = name[len(prefix):]
        if name.startswith(prefix) and suffix.isdigit():
            found.append((int(suffix), folder / name))
    return [p for _, p in sorted(found)]


@dataclass
class MergeResult:
    rows: dict  # key -> authoritative _Row, over --out and the parts
    part_ok: Counter = field(default_factory=Counter)  # (method, preset) -> successful part lines
    part_failed: Counter = field(default_factory=Counter)  # (method, preset) -> error part lines
    part_reused: Counter = field(default_factory=Counter)  # (method, preset) -> part lines on a reused prefix
    part_saved_s: Counter = field(default_factory=Counter)  # (method, preset) -> their prefix.saved_s, summed
    torn_bytes: int = 0  # torn tail of --out dropped (ours) or completed (not ours)
    written: bool = False  # whether --out was rewritten
    lines: int = 0  # lines in --out afterwards


def _scan_lines(path: Path):
    """(offset, length incl. newline, parsed dict or None) per complete line; then ('tail', bytes)."""
    offset = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                yield "tail", offset, raw
                return
            try:
                obj = json.loads(raw)
            except (ValueError, RecursionError):  # not JSON, or JSON Python cannot hold
                obj = None
            yield "line", offset, (len(raw), obj if isinstance(obj, dict) else None)
            offset += len(raw)


def merge(out: str | os.PathLike, parts: list[Path] | None = None, *, guard_foreign: bool = False) -> MergeResult:
    """Merge ``parts`` (default: :func:`find_parts`) into ``out``; see the module docstring.

    ``guard_foreign``: refuse (:class:`InputError`, nothing touched) a non-empty ``out`` that holds
    no result line at all (not even a torn one of ours), so a mistyped ``--out`` never damages
    another file.
    """
    out = Path(out)
    parts = find_parts(out) if parts is None else list(parts)
    files = ([out] if out.exists() else []) + parts
    entries: list[tuple[int, int, int, object]] = []  # (file index, offset, length, key or None)
    best: dict = {}  # key -> (entry index, _Row)
    result = MergeResult(rows={})
    repeats = foreign_tail = False
    out_keyed = 0
    for fi, path in enumerate(files):
        is_out = path == out and fi == 0
        for kind, offset, data in _scan_lines(path):
            if kind == "tail":
                if is_out and _tail_is_ours(data):
                    result.torn_bytes = len(data)  # the line in flight when a run was killed: dropped
                elif is_out:
                    foreign_tail = True  # not ours: kept, completed by a newline
                    entries.append((fi, offset, len(data), None))
                continue
            length, obj = data
            key = record_key(obj) if obj is not None else None
            if key is None:
                if is_out:
                    entries.append((fi, offset, length, None))
                continue
            row = _row(obj)
            out_keyed += is_out
            if not is_out:
                bucket = result.part_ok if row.error is None else result.part_failed
                bucket[(key[4], key[3])] += 1
                if row.reused:
                    result.part_reused[(key[4], key[3])] += 1
                    result.part_saved_s[(key[4], key[3])] += row.saved_s
            prev = best.get(key)
            if prev is None:
                entries.append((fi, offset, length, key))
                best[key] = (len(entries) - 1, row)
            else:
                repeats = True
                if _better(row, prev[1]):
                    best[key] = (None, row, (fi, offset, length))  # replaces the line at the key's position
    out_size = out.stat().st_size if out.exists() else 0
    if guard_foreign and out_size and not out_keyed and result.torn_bytes != out_size:
        raise InputError(
            f"--out {out} already holds something other than vitcop batch results; "
            "give a new file, or the output of an earlier batch to resume it"
        )
    result.rows = {k: v[1] for k, v in best.items()}
    result.lines = len(entries)
    if not parts and not repeats and not result.torn_bytes and not foreign_tail:
        return result  # nothing to merge, nothing to repair
    _write(out, files, entries, best)
    result.written = True
    for p in parts:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RuntimeFailure(f"merged into {out} but cannot remove {p}: {exc.strerror or exc}") from None
    _fsync_dir(out.parent)
    return result


def _write(out: Path, files: list[Path], entries: list, best: dict) -> None:
    """``entries`` (with each key's authoritative line) into ``<out>.merging``, fsync'd, renamed over ``out``."""
    tmp = out.with_name(out.name + ".merging")
    handles: dict = {}
    try:
        mode = out.stat().st_mode & 0o777 if out.exists() else 0o644
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb", buffering=1 << 20) as dst:
            for fi, offset, length, key in entries:
                if key is not None and best[key][0] is None:  # a later line replaced this key's first one
                    fi, offset, length = best[key][2]
                src = handles.get(fi)
                if src is None:
                    src = handles[fi] = open(files[fi], "rb")
                src.seek(offset)
                data = src.read(length)
                if len(data) != length:
                    raise RuntimeFailure(f"{files[fi]} changed while merging; run the batch again")
                dst.write(data if data.endswith(b"\n") else data + b"\n")
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, out)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise RuntimeFailure(f"cannot merge results into {out}: {exc.strerror or exc}") from None
        raise
    finally:
        for h in handles.values():
            h.close()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
