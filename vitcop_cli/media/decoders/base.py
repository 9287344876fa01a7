"""The decoder interface: open a clip, describe it, read the sampled frames (optionally scaled) in chunks.

Contract (importing this module is cheap: no torch, no decoding library):

- ``Decoder(path, *, threads=0, device="cpu")`` opens ``path`` (an existing regular file, checked by the
  caller with :func:`vitcop_cli.media.video.check_path`). ``threads``: decoding threads, 0 = as many as the
  machine has cores (FFmpeg's choice). ``device``: ``"cpu"`` or, where the backend lists it in ``devices``,
  ``"cuda"`` / ``"cuda:N"``. A bad file raises :class:`~vitcop_cli.errors.InputError` worded by the functions
  below, the same on every backend: :func:`empty_file` (0 bytes, checked here before any backend opens it),
  :func:`corrupt` (the file cannot be opened as a video), :func:`no_video_stream` (audio only, or a video
  stream without frames), :func:`truncated` (the file is cut short, or a frame fails to decode; raised by the
  constructor when the container announces more frames than it holds, else by :meth:`Decoder.read`).
- ``info() -> ClipInfo``: frame count (presentation order, as decord counts them), the stream's average
  frame rate, duration and the *displayed* size (a clip with a 90-degree display matrix is portrait).
- ``read(indices, size=None) -> torch.Tensor``: ``indices`` sorted, distinct, in ``[0, total_frames)``
  (anything else is a caller bug: ``ValueError``). Returns ``uint8`` RGB shaped ``(len(indices), H, W, 3)``,
  frames in the order of ``indices``, on the decoder's device. ``size=(H, W)`` (displayed orientation): each
  frame is scaled by the decoder to that size (bilinear, antialiased when shrinking); ``None``: displayed
  source size. Only the asked frames are converted to RGB. Reading a clip in ascending chunks (one ``read``
  per chunk) decodes it once, forward: memory is bounded by one chunk.
- ``timestamps(indices) -> list[float]``: presentation time of each frame in seconds from the first frame
  (the real times for variable-frame-rate clips). Free for frames already read; a backend may decode the
  others, so ask after reading.
- ``close()`` releases the file and the decoding threads; a decoder is a context manager.

A backend is one module ``<name>_backend.py`` in this package defining ``DECODER``, its :class:`Decoder`
subclass (see :func:`vitcop_cli.media.decoders.get`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ...errors import InputError
from ..names import shown_path

if TYPE_CHECKING:
    import torch

__all__ = ["ClipInfo", "Decoder", "corrupt", "empty_file", "no_video_stream", "truncated"]


@dataclass(frozen=True)
class ClipInfo:
    """What a decoder knows about a clip before decoding it. ``avg_fps`` / ``duration_s``: ``None`` when the
    container does not say; ``width`` / ``height``: as displayed (rotation applied)."""

    total_frames: int
    avg_fps: float | None
    duration_s: float | None
    width: int
    height: int



def empty_file(path: str) -> InputError:
    return InputError(f"video file {shown_path(path)} is empty (0 bytes); check the file or copy it again")


def corrupt(path: str, reason: str) -> InputError:
    return InputError(
        f"cannot read video {shown_path(path)}: not a valid video file, or it is corrupt or truncated ({reason}); "
        "check that it plays in a media player, or re-encode it (e.g. to H.264 MP4)"
    )


def no_video_stream(path: str) -> InputError:
    return InputError(
        f"{shown_path(path)} contains no video stream (audio only, or an empty container); give a file with video"
    )


def truncated(path: str, reason: str) -> InputError:
    return InputError(
        f"cannot decode video {shown_path(path)}: the file is corrupt or truncated ({reason}); "
        "re-encode it or get a fresh copy"
    )


class Decoder(ABC):
    """One open clip. Subclasses set ``name`` (and ``devices`` when they decode on more than the CPU) and
    implement :meth:`unavailable`, :meth:`_open`, :meth:`info`, :meth:`_read`, :meth:`timestamps`, :meth:`close`."""

    name: ClassVar[str]
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    @classmethod
    @abstractmethod
    def unavailable(cls) -> str | None:
        """``None`` when this backend can be used here, else a one-line reason with the fix."""

    def __init__(self, path: str, *, threads: int = 0, device: str = "cpu") -> None:
        if device.split(":")[0] not in self.devices:
            raise InputError(f"the {self.name} decoder cannot decode on {device!r}; it supports: "
                             f"{', '.join(self.devices)}")
        if threads < 0:
            raise InputError(f"decoding threads must be 0 (all cores) or more (got {threads})")
        self.path, self.threads, self.device = path, threads, device
        if os.path.getsize(path) == 0:
            raise empty_file(path)
        try:
            self._open()
        except BaseException:
            self.close()  # what _open had opened before it failed
            raise

    @abstractmethod
    def _open(self) -> None:
        """Open ``self.path``; raise the shared InputErrors (above) for a bad file. On failure :meth:`close`
        is called, so it must cope with a half-opened decoder."""

    @abstractmethod
    def info(self) -> ClipInfo: ...

    def read(self, indices: list[int], size: tuple[int, int] | None = None) -> "torch.Tensor":
        """``(len(indices), H, W, 3)`` uint8 RGB frames; see the module docstring."""
        total = self.info().total_frames
        if any(b <= a for a, b in zip(indices, indices[1:])) or (indices and not 0 <= indices[0] <= indices[-1] < total):
            raise ValueError(f"indices must be sorted, distinct and in [0, {total}); got {indices[:8]}...")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size must be (height, width), both at least 1; got {size}")
        size = None if size is None else (int(size[0]), int(size[1]))
        if not indices:
            import torch

            info = self.info()
            height, width = size or (info.height, info.width)
            return torch.empty((0, height, width, 3), dtype=torch.uint8, device=self.device)
        return self._read(list(indices), size)

    @abstractmethod
    def _read(self, indices: list[int], size: tuple[int, int] | None) -> "torch.Tensor":
        """:meth:`read` with its arguments checked."""

    @abstractmethod
    def timestamps(self, indices: list[int]) -> list[float]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> "Decoder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
