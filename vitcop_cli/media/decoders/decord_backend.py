"""decord backend (the default): its bundled FFmpeg, on the CPU, with everything it prints captured.

How it decodes (contract in :mod:`.base`):

- ``VideoReader`` with ``num_threads`` decoding threads (0: up to 8, one per core). decord counts frames and
  reads the container's timestamps on open; ``get_batch`` seeks to the key frame before each sampled frame
  when that is shorter than decoding forward, and converts only the sampled frames. Clips are read in their
  displayed orientation (decord applies the display matrix).
- ``size``: a ``VideoReader`` opened with decord's own ``width`` / ``height`` scales each frame inside FFmpeg's
  conversion (one pass, no source-size RGB frame is made). One reader is open at a time (the one for the size
  last read): a second reader on the same file beside one that has decoded makes decord's scaled decode hold
  gigabytes (1.7 GB for 16 frames of a 1080p clip, measured) and run slower.
- What FFmpeg and decord write to fd 2 is captured (:mod:`..decord_quiet`) and worded: no video stream,
  corrupt, truncated, and frame widths decord's converter refuses (2 to 24 pixels, say) — a message that says
  the file may be fine. A name that is not UTF-8 is opened through an ASCII-named symbolic link (decord passes
  names to FFmpeg as UTF-8 only).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from typing import TYPE_CHECKING

from ...errors import InputError
from ..decord_quiet import FRAME_SIZE_UNSUPPORTED, NO_VIDEO_STREAM, NativeStderr, decord_reason, log_captured
from ..names import shown_path
from .base import ClipInfo, Decoder, corrupt, no_video_stream, truncated

if TYPE_CHECKING:
    import torch

_THREADS = max(1, min(8, os.cpu_count() or 1))


class DecordDecoder(Decoder):
    name = "decord"

    @classmethod
    def unavailable(cls) -> str | None:
        """Always usable: decord is a dependency of vitcop, so a missing or broken one is the environment's
        problem, raised as :class:`~vitcop_cli.errors.EnvironmentProblem` when a clip is opened."""
        return None

    def _open(self) -> None:
        from ...environment import importing

        with importing("decord"):  # a broken decord is the environment's problem, not the file's
            import decord

        self._decord = decord
        self._reader, self._reader_size = self._new_reader(), None
        total = len(self._reader)
        if total <= 0:
            raise no_video_stream(self.path)
        height, width = self._decoded_size()
        avg_fps = _finite_positive(_safe(self._reader.get_avg_fps))
        self._info = ClipInfo(total, avg_fps, _pts_duration(self._reader, total), width, height)

    def _decoded_size(self) -> tuple[int, int]:
        """(height, width) as displayed: the first frame's (decord rotates as it decodes; it has no size query)."""
        with NativeStderr() as err:
            try:
                shape, failure = self._reader.get_batch([0]).shape, None
            except Exception as exc:  # noqa: BLE001 - worded below
                shape, failure = None, exc.with_traceback(None)
                self._reader = None  # closed here: FFmpeg's threads may still print while they stop
        if shape is None:
            raise self._failure(err.text, failure) from None
        return int(shape[1]), int(shape[2])

    def _new_reader(self, size: tuple[int, int] | None = None):
        """A ``VideoReader`` on the file (scaled to ``size`` = (h, w) by decord when given)."""
        scale = {} if size is None else {"height": size[0], "width": size[1]}
        failure: BaseException | None = None
        with NativeStderr() as err, _utf8_named(self.path) as source:
            try:
                reader = self._decord.VideoReader(source, ctx=self._decord.cpu(0),
                                                  num_threads=self.threads or _THREADS, **scale)
            except Exception as exc:  # decord raises RuntimeError / DECORDError (a bare Exception)
                reader, failure = None, exc.with_traceback(None)
        if reader is None:
            reason = decord_reason(err.text, failure)
            if reason == NO_VIDEO_STREAM:
                raise no_video_stream(self.path) from None
            if "av_read_frame" in reason or "partial file" in reason:
                raise truncated(self.path, reason) from None
            raise corrupt(self.path, reason) from None
        log_captured(self.path, err.text)
        return reader

    def _reader_for(self, size: tuple[int, int] | None):
        """The open reader, reopened first when it decodes at another size (one reader at a time)."""
        if size == (self._info.height, self._info.width):
            size = None
        if size != self._reader_size or self._reader is None:
            self._close_reader()
            self._reader, self._reader_size = self._new_reader(size), size
        return self._reader

    def info(self) -> ClipInfo:
        return self._info

    def _read(self, indices: list[int], size: tuple[int, int] | None) -> "torch.Tensor":
        import torch

        reader = self._reader_for(size)
        with NativeStderr() as err:
            try:
                batch, failure = reader.get_batch(indices).asnumpy(), None
            except Exception as exc:  # its traceback would hold the reader (decord's frames): keep the message
                batch, failure = None, exc.with_traceback(None)
                reader = self._reader = None  # closed here: FFmpeg's threads may still print while they stop
        if batch is None:
            raise self._failure(err.text, failure) from None
        log_captured(self.path, err.text)
        return torch.from_numpy(batch)

    def _failure(self, captured: str, failure: BaseException | None) -> InputError:
        """The error for a frame decord could not give: frame widths its converter refuses (the file may be
        fine), else a corrupt or truncated file."""
        reason = decord_reason(captured, failure)
        if reason == FRAME_SIZE_UNSUPPORTED:
            return InputError(
                f"cannot decode video {shown_path(self.path)}: its frames are too narrow for the video decoder "
                "(decord cannot convert some frame widths under 80 pixels, e.g. 2 to 24); the file itself may "
                "be fine; re-encode it at least 80 pixels wide, or try --decoder pyav"
            )
        return truncated(self.path, reason)

    def timestamps(self, indices: list[int]) -> list[float]:
        return _timestamps(self._reader, indices, self._info.avg_fps, self._info.duration_s)

    def close(self) -> None:
        self._close_reader()

    def _close_reader(self) -> None:
        # Closing a reader joins FFmpeg's decoding threads; what they still print is captured here, on every path.
        reader, self._reader = getattr(self, "_reader", None), None
        with NativeStderr() as closing:
            del reader
        log_captured(self.path, closing.text)


DECODER = DecordDecoder



def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextlib.contextmanager
def _utf8_named(path: str):
    """``path``, or, when its name is not UTF-8, a symbolic link to it with an ASCII name in a fresh temporary
    folder, removed on exit (a reader opened on it keeps the file)."""
    if _is_utf8(path):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="vitcop-media-")
    link = os.path.join(folder, "media" + os.path.splitext(path)[1].lower())
    try:
        os.symlink(os.fsencode(os.path.abspath(path)), link)
        yield link
    finally:
        with contextlib.suppress(OSError):
            os.unlink(link)
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _safe(fn, *args):
    try:
        return fn(*args)
    except Exception:
        return None


def _finite_positive(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def _pts_duration(reader, total: int) -> float | None:
    """End time of the last frame from the container's timestamps, if they look sane."""
    with NativeStderr():
        ts = _safe(reader.get_frame_timestamp, [0, total - 1])
    if ts is None:
        return None
    try:
        start, end = float(ts[0][0]), float(ts[-1][1])
    except Exception:
        return None
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        return None
    return end - start


def _timestamps(reader, indices: list[int], avg_fps: float | None, duration: float | None) -> list[float]:
    """Seconds from the clip start of each sampled frame.

    decord's presentation timestamps are used when they are finite, strictly increasing and fall within the clip
    (this handles variable frame rate); otherwise ``index / avg_fps`` (the frame count over the duration when the
    container gives no rate)."""
    with NativeStderr():
        ts = _safe(reader.get_frame_timestamp, [0, *indices])
    if ts is not None:
        try:
            origin = float(ts[0][0])
            starts = [float(row[0]) - origin for row in ts[1:]]
        except Exception:
            starts = None
        limit = (duration or 0.0) + 1e-3
        if (
            starts is not None
            and len(starts) == len(indices)
            and all(math.isfinite(s) for s in starts)
            and starts[0] >= -1e-6
            and all(b > a for a, b in zip(starts, starts[1:]))
            and (duration is None or starts[-1] <= limit)
        ):
            return [max(0.0, s) for s in starts]
    rate = avg_fps or (len(reader) / duration if duration else None)
    if rate:
        return [i / rate for i in indices]
    return [0.0 for _ in indices]
