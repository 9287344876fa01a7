"""PyAV backend (the ``av`` package, optional at runtime): FFmpeg through Python, on the CPU.

How it decodes (contract in :mod:`.base`):

- Opening demuxes the video stream once without decoding (as decord does) to index the frames: their
  presentation timestamps in order (frame ``i`` is the ``i``-th), which ones are key frames, and the
  timestamps :meth:`PyAVDecoder.timestamps` returns (free, exact for variable frame rates). A container that
  announces more frames than it holds raises :func:`.base.truncated`. The first frame is decoded to learn the
  display rotation (``VideoFrame.rotation``, from the display matrix; flips in the matrix are ignored).
- Frames are decoded forward with FFmpeg's frame and slice threads (``thread_type="AUTO"``,
  ``thread_count=threads``). Before a sampled frame, the decoder seeks to the key frame preceding it when
  that skips more frames than the threads hold in flight (sparse samples of long clips); otherwise it keeps
  decoding forward. Consecutive ascending :meth:`read` calls continue where the last one stopped.
- Only the sampled frames are converted: ``VideoFrame.to_ndarray(format="rgb24", width=, height=)``
  converts and scales in one swscale pass (bilinear, antialiased when shrinking), then the frame is rotated
  to its displayed orientation (``torch.rot90``, the scaled size asked pre-rotation).
"""

from __future__ import annotations

import bisect
import os
from typing import TYPE_CHECKING

from .base import ClipInfo, Decoder, corrupt, no_video_stream, truncated

if TYPE_CHECKING:
    import torch


def _reason(exc: BaseException) -> str:
    """FFmpeg's words for a PyAV error (``Invalid data found when processing input``), else the message."""
    from ..decord_quiet import one_line

    return one_line(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)


class PyAVDecoder(Decoder):
    name = "pyav"

    @classmethod
    def unavailable(cls) -> str | None:
        try:
            import av
        except ImportError:
            return "PyAV is not installed; pip install av"
        except Exception as exc:  # noqa: BLE001 - a broken install may raise anything
            return f"PyAV cannot be imported ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        if not hasattr(av.VideoFrame, "rotation"):  # how rotated clips are read upright; tested with PyAV 18
            return f"PyAV {av.__version__} is too old (no VideoFrame.rotation); pip install -U av"
        return None

    def _open(self) -> None:
        import av

        self._av = av
        self._file = None
        try:
            self._container = av.open(self.path)
        except UnicodeEncodeError:  # a name that is not UTF-8: FFmpeg reads it through Python's file object
            self._file = open(self.path, "rb")
            self._container = self._guard(lambda: av.open(self._file), corrupt)
        except av.FFmpegError as exc:
            raise corrupt(self.path, _reason(exc)) from None
        self._index()
        first = self._frame(0)
        self._turns = round((first.rotation or 0) / 90) % 4  # counter-clockwise quarter turns, as torch.rot90
        width, height = (first.height, first.width) if self._turns % 2 else (first.width, first.height)
        self._info = ClipInfo(len(self._pts), self._avg_fps, self._duration, width, height)

    def _guard(self, step, error):
        """``step()``, an FFmpeg error turned into ``error(path, reason)``."""
        try:
            return step()
        except self._av.FFmpegError as exc:
            raise error(self.path, _reason(exc)) from None

    def _index(self) -> None:
        """Demux the first video stream (no decoding): ``_pts`` sorted, ``_keys`` key-frame indices."""
        if not self._container.streams.video:
            raise no_video_stream(self.path)
        stream = self._stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = self.threads
        pts, keys, discarded, last_duration = [], set(), 0, 0

        def scan():
            nonlocal discarded, last_duration
            for packet in self._container.demux(stream):
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:  # the empty packet that flushes the decoder at the end
                    continue
                if packet.is_discard:  # dropped by the decoder (an edit list's pre-roll)
                    discarded += 1
                    continue
                pts.append(ts)
                last_duration = packet.duration or 0
                if packet.is_keyframe:
                    keys.add(ts)

        self._guard(scan, truncated)
        if not pts:
            raise no_video_stream(self.path)
        if stream.frames and stream.frames > len(pts) + discarded:
            raise truncated(self.path, f"the container lists {stream.frames} frames, {len(pts)} are present")
        self._pts = sorted(pts)
        self._at_pts = {ts: i for i, ts in enumerate(self._pts)}
        self._keys = [i for i, ts in enumerate(self._pts) if ts in keys] or [0]
        tb = stream.time_base
        self._seconds = [float((ts - self._pts[0]) * tb) for ts in self._pts]
        rate = stream.average_rate
        self._avg_fps = float(rate) if rate and rate > 0 else None
        end = float((self._pts[-1] - self._pts[0] + last_duration) * tb)
        if not last_duration and self._avg_fps:
            end += 1 / self._avg_fps
        self._duration = end if end > 0 else None
        self._frames = None  # the decoded frames since the last seek (a generator), and the last one taken:
        self._last, self._at = None, -1
        self._in_flight = self.threads or os.cpu_count() or 1

    def _frame(self, target: int):
        """The decoded frame ``target``: seek to its key frame when that skips work, else decode forward."""
        if target == self._at:
            return self._last
        key = self._keys[bisect.bisect_right(self._keys, target) - 1]
        if self._frames is None or target < self._at or key > self._at + 1 + self._in_flight:
            self._guard(lambda: self._container.seek(self._pts[key], backward=True, any_frame=False,
                                                     stream=self._stream), truncated)
            self._frames, self._at = self._container.decode(self._stream), key - 1

        def forward():
            for frame in self._frames:
                ts = frame.pts if frame.pts is not None else frame.dts
                self._last, self._at = frame, self._at_pts.get(ts, self._at + 1)
                if self._at >= target:
                    return frame if self._at == target else None
            return None

        frame = self._guard(forward, truncated)
        if frame is None:
            self._frames = None
            raise truncated(self.path, f"frame {target} of {len(self._pts)} could not be decoded")
        return frame

    def info(self) -> ClipInfo:
        return self._info

    def _read(self, indices: list[int], size: tuple[int, int] | None) -> "torch.Tensor":
        import torch

        height, width = size or (self._info.height, self._info.width)
        scale = {"threads": self.threads} if size is None else {
            "width": height if self._turns % 2 else width, "height": width if self._turns % 2 else height,
            "interpolation": "BILINEAR", "threads": self.threads}
        out = torch.empty((len(indices), height, width, 3), dtype=torch.uint8)
        for j, i in enumerate(indices):
            rgb = self._frame(i).to_ndarray(format="rgb24", **scale)
            out[j] = torch.from_numpy(rgb).rot90(self._turns, (0, 1))
        return out

    def timestamps(self, indices: list[int]) -> list[float]:
        return [self._seconds[i] for i in indices]

    def close(self) -> None:
        self._frames = self._last = None
        if getattr(self, "_container", None) is not None:
            self._container.close()
            self._container = None
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None


DECODER = PyAVDecoder
