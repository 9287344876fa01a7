"""The ``--out`` lock: one ``vitcop batch`` (or one torchrun job) per results file.

Contract:

- :class:`OutLock` takes an exclusive, non-blocking advisory ``flock`` on a sidecar file
  ``<out>.lock`` (created next to ``--out`` resolved — symbolic links followed — so every name of one
  results file takes one lock; mode 0644, left in place afterwards: removing it would
  let a waiting process lock an unlinked file). A sidecar, not ``--out`` itself, because the merge
  replaces ``--out`` by a rename, which would drop a lock held on the old file.
- A second holder gets an :class:`InputError` (exit 2) saying another batch is writing ``--out``.
  The CLI takes the lock *before* loading the model, so a refusal costs nothing. Under torchrun only
  rank 0 holds it (the ranks of one job are one writer). Where ``flock`` does not exist (Windows) or
  the file system refuses it, the run goes on unlocked.
- :meth:`OutLock.release` (also on ``with`` exit, and at process exit by the OS) frees it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

__all__ = ["OutLock", "lock_path"]


def lock_path(out: str | os.PathLike) -> Path:
    """``<out>.lock``, next to ``out`` resolved (symbolic links followed)."""
    out = Path(os.path.realpath(out))
    return out.with_name(out.name + ".lock")


class OutLock:
    """Exclusive advisory lock on ``<out>.lock``, taken on construction."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.path = lock_path(out)
        try:
            self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"--out {out}: cannot create the lock file {self.path} ({exc.strerror or exc})") from None
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise InputError(
                f"--out {out} is being written by another vitcop batch (lock {self.path}); "
                "wait for it to finish, or give another --out"
            ) from None
        except OSError:
            return  # a file system without locks: go on unlocked

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)  # releases the flock
            except OSError:
                pass
            self.fd = None

    def __enter__(self) -> "OutLock":
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
