"""Quiet decord: capture what its bundled FFmpeg / C++ code writes to fd 2, and word it as one line.

FFmpeg (inside decord) logs with ``fprintf(stderr, ...)`` and decord's C++ code with ``std::cerr``;
neither goes through ``sys.stderr``, so :class:`NativeStderr` redirects file descriptor 2 into a
temporary file while decord works (a lock serialises decodes). :func:`decord_reason` turns what was
captured (plus the exception) into a short reason for an error message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading

log = logging.getLogger("vitcop_cli.media.video")

NO_VIDEO_STREAM = "no video stream"
FRAME_SIZE_UNSUPPORTED = "decord cannot convert frames of this size"
_LOCATION_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")
_SOURCE_PREFIX = re.compile(r"^\S+\.(cc|h|cpp|c):\d+:\s*")


def _clean_line(line: str) -> str:
    line = line.strip()
    for _ in range(4):
        new = _SOURCE_PREFIX.sub("", _LOCATION_PREFIX.sub("", line)).strip()
        if new == line:
            break
        line = new
    return line


def one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).rstrip(".")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decord_reason(captured: str, exc: BaseException | None) -> str:
    """A short, single-line reason from decord's / FFmpeg's output."""
    lines = [_clean_line(line) for line in captured.splitlines()]
    lines = [line for line in lines if line]
    messages = lines + [_clean_line(line) for line in str(exc or "").splitlines()]
    for msg in messages:
        if "cannot find video stream" in msg:
            return NO_VIDEO_STREAM
    for msg in messages:
        # decord's own copy of a decoded frame; its padded row width differs from the frame's at some narrow
        # widths (2-24, 48, 72 pixels seen): the file is fine, decord cannot convert it
        if "DECORDArrayCopyFromTo" in msg and "size must exactly match" in msg:
            return FRAME_SIZE_UNSUPPORTED
    for msg in messages:
        if "moov atom not found" in msg:
            return "moov atom not found"
    for msg in messages:
        # decord: "ERROR opening: <path>, Invalid data found when processing input"
        m = re.search(r"ERROR opening: .*, ([^,]+)$", msg)
        if m:
            return one_line(m.group(1).strip())
    if lines:
        return one_line(lines[0])
    text = one_line(" ".join(messages)) if messages else ""
    return text or (type(exc).__name__ if exc else "unknown error")


def log_captured(path: str, text: str) -> None:
    if text.strip():
        log.debug("decord/FFmpeg output while reading %s:\n%s", path, text.rstrip())


_STDERR_LOCK = threading.RLock()


class NativeStderr:
    """Context manager: redirect file descriptor 2 into a temporary file; ``.text`` holds it after.

    FFmpeg (inside decord) logs with ``fprintf(stderr, ...)`` and decord's C++ code logs to
    ``std::cerr``; neither goes through ``sys.stderr``, so only an fd-level redirect silences them.
    Falls back to doing nothing when fd 2 cannot be duplicated (e.g. no stderr at all).
    """

    def __init__(self) -> None:
        self.text = ""
        self._saved: int | None = None
        self._tmp = None

    def __enter__(self) -> "NativeStderr":
        _STDERR_LOCK.acquire()
        try:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            self._tmp = tempfile.TemporaryFile(mode="w+b")
            self._saved = os.dup(2)
            os.dup2(self._tmp.fileno(), 2)
        except Exception:
            self._restore()
        return self

    def _restore(self) -> None:
        if self._saved is not None:
            with contextlib.suppress(OSError):
                os.dup2(self._saved, 2)
            with contextlib.suppress(OSError):
                os.close(self._saved)
            self._saved = None

    def __exit__(self, *exc_info) -> None:
        try:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            self._restore()
            if self._tmp is not None:
                with contextlib.suppress(Exception):
                    self._tmp.seek(0)
                    self.text = self._tmp.read().decode("utf-8", "replace")
                with contextlib.suppress(Exception):
                    self._tmp.close()
                self._tmp = None
        finally:
            _STDERR_LOCK.release()
