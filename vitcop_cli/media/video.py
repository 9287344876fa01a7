"""Decode a video clip (or read an image) and sample the frames a vision-language model sees.

Contract:

- :func:`load_visual` takes a path to one media file and returns a :class:`Visual`. Videos are
  decoded with decord and only the sampled frames are decoded; images are read with Pillow.
  For a video, ``Visual.frames`` is a ``uint8`` tensor shaped ``(T, H, W, 3)`` (RGB, source
  resolution); for an image it is an RGB ``PIL.Image`` (the first frame of an animated GIF/TIFF).
- Frames are sampled by :func:`sample_indices`, a pure function that reproduces qwen-vl-utils'
  frame-count rule (``fps`` frames per second of clip, clamped to ``[min_frames, max_frames]`` and
  rounded to an even number, indices spread uniformly with ``torch.linspace(...).round()``), with a
  few documented deviations for clips that are too short to honour the rule. When the frames used
  differ from what was asked (``--frames 3`` gives 4; ``--frames 8`` on a 5-frame clip gives 5; a
  rate capped by ``--max-frames``), ``Visual.warnings`` says so in one line each
  (:func:`frame_count_warnings`); ``ask`` prints them and ``--json`` carries them in ``warnings``.
- Every expected failure (missing file, a folder, an unsupported extension, an empty / corrupt /
  truncated / non-video file, an unreadable image, a video without frames, bad sampling arguments)
  raises :class:`~vitcop_cli.errors.InputError` with a one-line message that says what is wrong and
  what to do. Nothing else is raised for bad input.
- decord (through its bundled FFmpeg) writes diagnostics straight to the process's stderr file
  descriptor. While decord opens and decodes a file, fd 2 is redirected to a temporary file, so a
  corrupt file produces no stray output; what was captured is used to word the error message and
  is otherwise logged at DEBUG level on this module's logger. Python-level writes to stderr from
  other threads during that short window are captured too (a lock serialises decodes).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .decord_quiet import NO_VIDEO_STREAM, NativeStderr, decord_reason, log_captured, one_line

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Visual",
    "image_visual",
    "is_media_file",
    "load_visual",
    "sample_indices",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {"mp4", "mkv", "webm", "avi", "mov", "m4v", "mpg", "mpeg", "flv", "wmv", "ts", "3gp"}
)
IMAGE_EXTENSIONS: frozenset[str] = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})

# qwen-vl-utils defaults.
FRAME_FACTOR = 2
DEFAULT_FPS = 2.0
DEFAULT_MIN_FRAMES = 4
DEFAULT_MAX_FRAMES = 768

_DECODE_THREADS = max(1, min(8, os.cpu_count() or 1))


def _extension(path: str | os.PathLike) -> str:
    return Path(path).suffix.lower().lstrip(".")


def is_media_file(path: str | os.PathLike) -> bool:
    """True when ``path``'s extension (case-insensitive) is a supported video or image extension.

    Only the name is looked at; the file need not exist.
    """
    ext = _extension(path)
    return ext in VIDEO_EXTENSIONS or ext in IMAGE_EXTENSIONS


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


def _round_even(x: float) -> int:
    # qwen-vl-utils' round_by_factor: Python's round(), i.e. ties go to the even quotient
    # (5 -> round(2.5) * 2 = 4, 7 -> round(3.5) * 2 = 8).
    return round(x / FRAME_FACTOR) * FRAME_FACTOR


def _ceil_even(x: float) -> int:
    return math.ceil(x / FRAME_FACTOR) * FRAME_FACTOR


def _floor_even(x: float) -> int:
    return math.floor(x / FRAME_FACTOR) * FRAME_FACTOR


def sample_indices(
    total_frames: int,
    video_fps: float | None,
    *,
    fps: float = DEFAULT_FPS,
    frames: int | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    min_frames: int = DEFAULT_MIN_FRAMES,
) -> list[int]:
    """Indices (sorted, distinct, in ``[0, total_frames)``) of the frames to feed the model.

    The count ``n`` follows qwen-vl-utils' ``smart_nframes``:

    - ``frames=None`` (sample by rate): ``n = total_frames / video_fps * fps``, clamped to
      ``[ceil_even(min_frames), floor_even(min(max_frames, total_frames))]`` (the upper bound wins
      when the two cross), then rounded to the nearest even number with Python's ``round`` (ties to
      even: 5 -> 4, 7 -> 8). Example: a 60 s clip at 30 fps with ``fps=2`` gives 120 frames.
    - ``frames=N`` overrides the rate: ``n = round_even(N)`` as qwen-vl-utils does for ``nframes``
      (so 3 -> 4, 5 -> 4, 7 -> 8, and 1 -> 2 because a count of 0 is bumped to 2), then capped by
      ``floor_even(max_frames)`` and by ``total_frames``. ``video_fps`` is not used.

    The indices are ``torch.linspace(0, total_frames - 1, n).round()``: first and last frame are
    always included and the spacing is uniform (never below one frame, so no duplicates).

    Edge cases (where this deliberately differs from qwen-vl-utils, which raises instead):

    - The clip has fewer frames than asked for (e.g. a 3-frame clip with ``min_frames=4``, or
      ``frames=8`` on a 5-frame clip): every frame is used once, in order; nothing is duplicated
      and no error is raised. The count may then be odd; Qwen2-VL's video processor pads an odd
      count by repeating the last frame, so that is acceptable.
    - A 1-frame video gives ``[0]``.
    - ``max_frames=1`` gives one frame (``[0]``) rather than the zero frames that flooring to an
      even number would give.
    - ``total_frames == 0`` (or negative) raises :class:`InputError`.
    - ``fps <= 0``, ``frames < 1``, ``max_frames < 1`` or ``min_frames < 1`` raise
      :class:`InputError`; so does a missing / non-positive ``video_fps`` when sampling by rate.
    """
    total_frames = int(total_frames)
    if total_frames <= 0:
        raise InputError("the video has no frames; check that the file plays, or re-encode it")
    if max_frames is None or max_frames < 1:
        raise InputError(f"max_frames must be at least 1 (got {max_frames})")
    if min_frames < 1:
        raise InputError(f"min_frames must be at least 1 (got {min_frames})")
    if frames is not None:
        if frames < 1:
            raise InputError(f"--frames must be at least 1 (got {frames})")
        cap = _floor_even(max_frames) if max_frames >= FRAME_FACTOR else 1
        n = min(max(_round_even(frames), FRAME_FACTOR), cap)
    else:
        if fps is None or not math.isfinite(fps) or fps <= 0:
            raise InputError(f"--fps must be a positive number (got {fps})")
        if video_fps is None or not math.isfinite(video_fps) or video_fps <= 0:
            raise InputError(
                "the video's frame rate is unknown, so it cannot be sampled by rate; "
                "ask for a fixed number of frames instead (--frames N)"
            )
        lo = _ceil_even(min_frames)
        hi = _floor_even(min(max_frames, total_frames))
        if total_frames < lo and total_frames <= max_frames:
            n = total_frames  # clip shorter than the minimum: use every frame once
        else:
            n = total_frames / video_fps * fps
            n = min(max(n, lo), hi)
            n = _round_even(n)
    n = max(1, min(n, total_frames))
    if n >= total_frames:
        return list(range(total_frames))
    import torch  # lazily: importing this module stays cheap (the CLI's fast paths use its constants)

    return torch.linspace(0, total_frames - 1, n).round().long().tolist()


def frame_count_warnings(
    total: int, used: int, *, fps: float, frames: int | None, max_frames: int, video_fps: float | None = None
) -> list[str]:
    """What the user asked for and did not get, in words (``[]`` when the count is as asked).

    ``--frames N``: rounded to an even count (1 -> 2, 3 -> 4, 5 -> 4, 7 -> 8), capped by
    ``--max-frames`` and by the clip's length. ``--fps``: capped by ``--max-frames`` (the minimum of 4
    frames and the clip's length are documented and not reported)."""
    out = []
    if frames is not None and used != frames:
        if used >= total and frames > total:
            why = f"the clip has only {total} frame{'s' if total != 1 else ''}, all used"
        elif frames > max_frames and used <= max_frames:
            why = f"capped by --max-frames {max_frames}"
        else:
            why = "frame counts are rounded to an even number (frames are paired into temporal patches)"
        out.append(f"--frames {frames}: using {used} frame{'s' if used != 1 else ''}; {why}")
    elif frames is None and video_fps and total / video_fps * fps > max_frames and used < total:
        out.append(f"--fps {fps:g}: capped at --max-frames {max_frames} ({used} frames); "
                   "raise --max-frames or lower --fps")
    return out


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@dataclass
class Visual:
    """A decoded clip or image, ready for a processor.

    ``frames``: video -> ``torch.uint8`` tensor ``(T, H, W, 3)``; image -> RGB ``PIL.Image``.
    ``timestamps``: seconds from the start of the clip of each sampled frame (``[0.0]`` for an image).
    ``indices``: source frame indices of the sampled frames (``[0]`` for an image).
    ``source_fps`` / ``duration_s`` / ``sampling_fps``: ``None`` for an image; ``sampling_fps`` is
    frames used per second of clip. ``width`` / ``height``: source resolution.
    """

    kind: str  # "video" | "image"
    path: str
    frames: Any = field(repr=False)
    timestamps: list[float]
    indices: list[int]
    source_fps: float | None
    total_frames: int
    duration_s: float | None
    width: int
    height: int
    sampling_fps: float | None
    warnings: list[str] = field(default_factory=list)  # sampling adjustments the user should know about

    @property
    def num_frames(self) -> int:
        """Frames handed to the model (1 for an image)."""
        return len(self.indices)


def _supported_list() -> str:
    return (
        f"videos: {', '.join(sorted(VIDEO_EXTENSIONS))}; images: {', '.join(sorted(IMAGE_EXTENSIONS))}"
    )


def check_path(path: str) -> str:
    """Validate existence / type / extension; return the lower-case extension."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {path}; check the path")
    if p.is_dir():
        raise InputError(f"{path} is a directory; give one video or image file, or use `vitcop batch` for folders")
    if not p.is_file():
        raise InputError(f"{path} is not a regular file; give a video or image file")
    ext = _extension(p)
    if ext not in VIDEO_EXTENSIONS and ext not in IMAGE_EXTENSIONS:
        shown = f"'.{ext}'" if ext else "no extension"
        raise InputError(f"unsupported file type ({shown}) for {path}; supported: {_supported_list()}")
    if not os.access(p, os.R_OK):
        raise InputError(f"cannot read {path}: permission denied; check the file's permissions")
    return ext


def load_visual(
    path: str | os.PathLike,
    *,
    fps: float = DEFAULT_FPS,
    frames: int | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> Visual:
    """Load ``path`` (a video or an image, chosen by extension) and sample its frames.

    ``fps`` / ``frames`` / ``max_frames`` are passed to :func:`sample_indices` (``frames``
    overrides ``fps``); they are ignored for an image. Raises :class:`InputError` for bad input.
    """
    path_str = os.fspath(path)
    ext = check_path(path_str)
    if ext in IMAGE_EXTENSIONS:
        return _load_image(path_str)
    return _load_video(path_str, fps=fps, frames=frames, max_frames=max_frames)


def _load_image(path: str) -> Visual:
    from PIL import Image

    if os.path.getsize(path) == 0:
        raise InputError(f"image file {path} is empty (0 bytes); check the file or export it again")
    try:
        with Image.open(path) as im:
            im.load()  # force decoding here so truncated / corrupt files fail now
            image = im.convert("RGB")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise InputError(
            f"cannot read image {path}: {one_line(str(exc)) or type(exc).__name__}; "
            "check that it opens in an image viewer, or save it again as PNG/JPEG"
        ) from None
    return image_visual(image, path)


def image_visual(image, path: str) -> Visual:
    """The :class:`Visual` of an RGB ``PIL.Image`` already in memory (one frame at t = 0)."""
    width, height = image.size
    return Visual(
        kind="image",
        path=path,
        frames=image,
        timestamps=[0.0],
        indices=[0],
        source_fps=None,
        total_frames=1,
        duration_s=None,
        width=width,
        height=height,
        sampling_fps=None,
    )


def _load_video(path: str, *, fps: float, frames: int | None, max_frames: int) -> Visual:
    # Validate the sampling arguments before touching the file (cheap, clearer error first).
    if frames is None and (fps is None or not math.isfinite(fps) or fps <= 0):
        raise InputError(f"--fps must be a positive number (got {fps})")
    if frames is not None and frames < 1:
        raise InputError(f"--frames must be at least 1 (got {frames})")
    if max_frames is None or max_frames < 1:
        raise InputError(f"--max-frames must be at least 1 (got {max_frames})")
    if os.path.getsize(path) == 0:
        raise InputError(f"video file {path} is empty (0 bytes); check the file or copy it again")

    from ..environment import importing

    with importing("decord"):  # a broken decord is the environment's problem, not the file's
        import decord

    open_exc: BaseException | None = None
    with NativeStderr() as err:
        try:
            reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=_DECODE_THREADS)
        except Exception as exc:  # decord raises RuntimeError / DECORDError (a bare Exception)
            reader, open_exc = None, exc
    if reader is None:
        reason = decord_reason(err.text, open_exc)
        if reason == NO_VIDEO_STREAM:
            raise InputError(
                f"{path} contains no video stream (audio only, or an empty container); give a file with video"
            ) from None
        raise InputError(
            f"cannot read video {path}: not a valid video file, or it is corrupt or truncated ({reason}); "
            "check that it plays in a media player, or re-encode it (e.g. to H.264 MP4)"
        ) from None
    log_captured(path, err.text)

    try:
        total = len(reader)
        if total <= 0:
            raise InputError(f"video {path} has no frames; check that it plays, or re-encode it")
        avg_fps = _finite_positive(_safe(reader.get_avg_fps))
        duration = _pts_duration(reader, total)
        if avg_fps is None and duration is not None:
            avg_fps = total / duration
        if duration is None and avg_fps is not None:
            duration = total / avg_fps

        indices = sample_indices(total, avg_fps, fps=fps, frames=frames, max_frames=max_frames)

        with NativeStderr() as err:
            try:
                batch = reader.get_batch(indices).asnumpy()
                decode_exc = None
            except Exception as exc:  # its traceback would hold the reader (decord's frames): keep the message
                batch, decode_exc = None, exc.with_traceback(None)
        if batch is None:
            raise InputError(
                f"cannot decode video {path}: the file is corrupt or truncated "
                f"({decord_reason(err.text, decode_exc)}); re-encode it or get a fresh copy"
            ) from None
        log_captured(path, err.text)

        timestamps = _timestamps(reader, indices, avg_fps, duration)
    finally:
        # Closing the reader joins FFmpeg's decoding threads; what they still print is captured here, on
        # every path (an error's traceback would otherwise keep the reader alive until a later GC).
        with NativeStderr() as closing:
            del reader
        log_captured(path, closing.text)
    import torch

    tensor = torch.from_numpy(batch)
    if tensor.ndim != 4 or tensor.shape[-1] != 3 or tensor.shape[0] != len(indices):
        raise InputError(
            f"cannot decode video {path}: got frames shaped {tuple(tensor.shape)}; re-encode it (e.g. to H.264 MP4)"
        )
    height, width = int(tensor.shape[1]), int(tensor.shape[2])  # decord decodes at source size
    return Visual(
        kind="video",
        path=path,
        frames=tensor,
        timestamps=timestamps,
        indices=list(indices),
        source_fps=avg_fps,
        total_frames=total,
        duration_s=duration,
        width=width,
        height=height,
        sampling_fps=(len(indices) / duration) if duration else None,
        warnings=frame_count_warnings(
            total, len(indices), fps=fps, frames=frames, max_frames=max_frames, video_fps=avg_fps
        ),
    )


# ---------------------------------------------------------------------------------------------
# decord helpers
# ---------------------------------------------------------------------------------------------


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

    decord's presentation timestamps are used when they are finite, strictly increasing and fall
    within the clip (this handles variable frame rate); otherwise ``index / avg_fps``.
    """
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
            return [round(max(0.0, s), 6) for s in starts]
    if avg_fps:
        return [round(i / avg_fps, 6) for i in indices]
    return [0.0 for _ in indices]
