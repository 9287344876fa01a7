"""``PrefixStore``: kept pruned prefixes on disk (``--prefix-cache DIR``), so a clip is pruned once across processes.

Contract:

- ``PrefixStore(root, max_bytes=DEFAULT_MAX_BYTES)``: one folder (created if missing), one file per key:
  ``<root>/<key>.safetensors`` (``key``: :func:`prefix_key`, 64 hex digits; its content:
  :mod:`.prefix_file`). Files are safetensors only, read with ``safetensors.safe_open``: a cache file can
  never run code (no pickle, no ``torch.load``).
- :meth:`PrefixStore.load` ``(key, session) -> (KeptPrefix, Visual) | None``: None when there is no file; a
  file that cannot be used (truncated, not safetensors, damaged (checksum), another format / key / model /
  dtype / device / vitcop, transformers or torch version, tensors that do not fit the model) is a miss too:
  one warning line, and the file is removed. So a cache file never gives a wrong answer, at worst a
  fresh prefill. A hit touches the file's mtime (it counts as recently used).
- :meth:`PrefixStore.save` ``(key, session, kept, visual)``: written to a temporary file in the same folder,
  then ``os.replace``'d onto its name (atomic: readers see the old file or the new one, whole; two writers of
  one key both succeed, the last one's file stays). Then the cap: while the folder's cache files exceed
  ``max_bytes``, the least recently used (oldest mtime) is deleted — never the file just written, unless it
  alone exceeds the cap: then it is not kept (a warning says so). A file that cannot be written (disk full,
  read-only folder) is a warning, never an error: the answer does not depend on the cache.
- Warnings: each call appends its one line (``"prefix cache: ..."``) to ``warnings`` when given (``Session.open``
  passes the opened clip's list, so they reach its first answer's ``warnings`` like every other vitcop
  warning), else logs it on the ``vitcop_cli.session.prefix_store`` logger.
- :func:`prefix_key` ``(session, path, options) -> str``: the key of ``path`` (a local file; a URL is
  digested once fetched) opened with :class:`~.prefix_key.ClipOptions` ``options`` on ``session``'s model
  (:func:`.prefix_file.model_identity`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from pathlib import Path

import torch

from ..errors import InputError, exc_line
from ..media.video import Visual
from .generation import KeptPrefix
from .prefix_file import Rejected, decode, encode, model_identity
from .prefix_key import ClipOptions, clip_key, media_digest

__all__ = ["DEFAULT_MAX_BYTES", "PrefixStore", "prefix_key", "store_identity"]

DEFAULT_MAX_BYTES = 4 * 2**30  # 4 GiB
SUFFIX = ".safetensors"
_KEY = re.compile(r"[0-9a-f]{64}")
_STALE_TMP_S = 24 * 3600  # a temporary file this old is a writer that died: removed when the cap is applied
log = logging.getLogger(__name__)


def store_identity(session) -> str:
    """``session``'s model identity as the store's keys spell it (:func:`.prefix_file.model_identity`, JSON)."""
    return json.dumps(model_identity(session), sort_keys=True)


def prefix_key(session, path: str | Path, options: ClipOptions) -> str:
    """The store key of the media file ``path`` opened with ``options`` on ``session``'s model."""
    return clip_key(store_identity(session), media_digest(path), options)


class PrefixStore:
    """Kept pruned prefixes on disk, one safetensors file per key (see the module docstring)."""

    def __init__(self, root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise InputError(f"the prefix cache's size cap must be a positive number of bytes, got {max_bytes!r}")
        self.root = Path(root).expanduser()
        self.max_bytes = max_bytes
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot use {self.root} as the prefix cache: {exc.strerror or exc}") from None
        if not self.root.is_dir():
            raise InputError(f"cannot use {self.root} as the prefix cache: not a folder")

    def path(self, key: str) -> Path:
        """The file of ``key`` (64 lower-case hex digits, as :func:`prefix_key` makes them)."""
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"a prefix key is 64 hex digits, got {key!r}")
        return self.root / f"{key}{SUFFIX}"

    def load(self, key: str, session, *, warnings: list[str] | None = None) -> tuple[KeptPrefix, Visual] | None:
        """The prefix and visual stored under ``key`` for ``session``'s model, or None (a miss; a file that
        cannot be used is removed, with one warning). The visual has no pixels (a video: a ``meta`` tensor of
        its frames' shape; an image: its RGB pixels, which its prompts need)."""
        path = self.path(key)
        from safetensors import safe_open

        inode = None
        try:
            inode = os.stat(path).st_ino  # before opening: a file another writer puts there later is never removed
            with safe_open(str(path), framework="pt", device="cpu") as f:
                kept, visual = decode(key, session, f.metadata(), lambda: {n: f.get_tensor(n) for n in f.keys()})
        except FileNotFoundError:
            return None
        except Rejected as exc:
            self._drop(path, inode, str(exc), warnings)
            return None
        except (MemoryError, torch.cuda.OutOfMemoryError):
            raise  # the file may be fine: no room to read it is not a reason to remove it
        except Exception as exc:  # noqa: BLE001 - unreadable in any way (truncated, not safetensors): a miss
            self._drop(path, inode, f"unreadable ({exc_line(exc)})", warnings)
            return None
        try:
            os.utime(path)  # recently used: the cap evicts it last
        except OSError:
            pass
        return kept, visual

    def save(self, key: str, session, kept: KeptPrefix, visual: Visual, *, warnings: list[str] | None = None) -> None:
        """Store ``kept`` (built by ``session`` for ``visual``) under ``key``, atomically; then apply the cap."""
        path = self.path(key)
        from safetensors.torch import save_file

        tmp = self.root / f".{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            tensors, metadata = encode(key, session, kept, visual)
            save_file(tensors, str(tmp), metadata=metadata)
            size = tmp.stat().st_size
            if size > self.max_bytes:
                tmp.unlink()
                _warn(f"the prefix ({_mib(size)}) alone exceeds the cache's cap ({_mib(self.max_bytes)}); not kept "
                      "on disk", warnings)
                return
            os.replace(tmp, path)
        except OSError as exc:
            _unlink(tmp)
            _warn(f"could not save the prefix in {self.root} ({exc.strerror or exc_line(exc)}); it is kept in "
                  "memory only", warnings)
            return
        except Exception:
            _unlink(tmp)
            raise
        self._apply_cap(path)

    def files(self) -> list[Path]:
        """The cache files in the folder, least recently used first."""
        return [p for p, _, _ in self._listing()]

    @property
    def nbytes(self) -> int:
        """Bytes of the cache files in the folder."""
        return sum(size for _, size, _ in self._listing())

    # ---- internals -----------------------------------------------------------------------------------------
    def _listing(self) -> list[tuple[Path, int, float]]:
        out = []
        for p in self.root.iterdir():
            if p.suffix != SUFFIX or not _KEY.fullmatch(p.stem):
                continue
            try:
                st = p.stat()
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
            out.append((p, st.st_size, st.st_mtime))
        return sorted(out, key=lambda item: (item[2], item[0].name))

    def _apply_cap(self, keep: Path) -> None:
        """Delete the least recently used files until the folder fits ``max_bytes`` (never ``keep``), and
        temporary files of writers that died long ago."""
        now = time.time()
        for p in self.root.glob(".*.tmp"):
            try:
                if now - p.stat().st_mtime > _STALE_TMP_S:
                    p.unlink()
            except OSError:
                pass
        listing = self._listing()
        total = sum(size for _, size, _ in listing)
        for p, size, _ in listing:
            if total <= self.max_bytes:
                break
            if p == keep:
                continue
            _unlink(p)
            total -= size

    def _drop(self, path: Path, inode: int | None, reason: str, warnings: list[str] | None) -> None:
        """Remove an unusable file (unless another writer replaced it meanwhile) and warn once."""
        try:
            if inode is not None and os.stat(path).st_ino == inode:
                path.unlink()
        except OSError:
            pass
        _warn(f"{path.name[:12]}... in {self.root} was not used: {reason}; the clip is prefilled afresh", warnings)


def _warn(text: str, warnings: list[str] | None) -> None:
    line = f"prefix cache: {text}"
    if warnings is None:
        log.warning(line)
    else:
        warnings.append(line)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"
