"""Decode a video clip (or read an image) and sample the frames a vision-language model sees.

Contract:

- :func:`load_visual` takes a path to one media file and returns a :class:`Visual`. Videos are
  decoded by a backend of :mod:`.decoders` (decord by default; torchcodec, PyAV) and only the sampled
  frames are decoded; images are read with Pillow. For a video, ``Visual.frames`` is a ``uint8`` tensor
  shaped ``(T, h, w, 3)`` (RGB) at the size the model's processor uses when a session passes its
  :class:`FrameSizing` (``--resize fast``: scaled by the decoder; ``exact``: by the processor's own resize,
  chunk by chunk), else at source resolution; ``Visual.width`` / ``height`` are always the source's. Frames
  are read in bounded chunks on a background thread (:mod:`.chunked`): memory holds a chunk of
  source-size frames, never the clip. For an image ``frames`` is an RGB ``PIL.Image`` (the first frame of
  an animated GIF/TIFF).
- Frames are sampled by :func:`.sampling.sample_indices`, a pure function that reproduces qwen-vl-utils'
  frame-count rule (``fps`` frames per second of clip, clamped to ``[min_frames, max_frames]`` and
  rounded to a multiple of the family's frames per temporal patch (:class:`.sampling.FrameRule`), indices spread
  uniformly with ``torch.linspace(...).round()``), with a few documented deviations for clips that are too
  short to honour the rule. When the frames used differ from what was asked (``--frames 3`` gives 4 on
  Qwen; ``--frames 8`` on a 5-frame clip gives 5; a rate capped by ``--max-frames``), ``Visual.warnings``
  says so in one line each (:func:`.sampling.frame_count_warnings`); ``ask`` prints them and ``--json`` carries them.
- Every expected failure (missing file, a folder, an unsupported extension, an empty / corrupt /
  truncated / non-video file, an unreadable image, a video without frames, bad sampling arguments)
  raises :class:`~vitcop_cli.errors.InputError` with a one-line message that says what is wrong and
  what to do, worded the same by every decoder (:mod:`.decoders.base`). Nothing else is raised for bad input.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from .decord_quiet import one_line
from .names import shown_path
from .sampling import DEFAULT_FPS, DEFAULT_MAX_FRAMES, FrameRule, frame_count_warnings, sample_indices

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Visual",
    "image_visual",
    "is_media_file",
    "FrameSizing",
    "load_visual",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {"mp4", "mkv", "webm", "avi", "mov", "m4v", "mpg", "mpeg", "flv", "wmv", "ts", "3gp"}
)
IMAGE_EXTENSIONS: frozenset[str] = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})


# What one visual may be, checked before it is decoded or handed to a processor (README: ask, batch).
MAX_IMAGE_PIXELS = 50_000_000  # an image (or a video frame) over 50 megapixels: refused, read from its header
MAX_ASPECT_RATIO = 200  # longer side / shorter side; the Qwen processors refuse more


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


@dataclass(frozen=True)
class FrameSizing:
    """Where a clip's frames go, from the model's processor (``Session.frame_sizing``): ``target(frames, height,
    width) -> (h, w)`` is the size it resizes to; ``resize(chunk, (h, w))`` its own resize of ``(t, H, W, 3)``
    uint8 frames for ``--resize exact`` (``None`` for fast: the decoder scales each frame itself);
    ``preprocess(frames, h, w)`` (optional) starts the model's preprocessing of the clip chunk by chunk: a sink
    whose ``add(chunk)`` takes each chunk, in order, at ``(h, w)`` and whose ``result()`` becomes
    ``Visual.processed``; ``align``: chunks hold a multiple of that many frames (a temporal patch)."""

    target: Callable[[int, int, int], tuple[int, int]]
    resize: Callable | None = None
    preprocess: Callable | None = None
    align: int = 1


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
    # the model's preprocessing of ``frames``, done chunk by chunk while the clip decoded (FrameSizing.preprocess)
    processed: Any = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        """Frames handed to the model (1 for an image)."""
        return len(self.indices)


def _supported_list() -> str:
    return (
        f"videos: {', '.join(sorted(VIDEO_EXTENSIONS))}; images: {', '.join(sorted(IMAGE_EXTENSIONS))}"
    )


def check_path(path: str) -> str:
    """Validate the name (no NUL byte, not too long), existence, type and extension; return the lower-case
    extension. Every failure is an :class:`InputError` naming the path as :func:`shown_path` writes it."""
    name = shown_path(path)
    if "\0" in path:
        raise InputError(f"the media path {name} contains a NUL byte, which no file name can; check the path")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(_stat_failure(path, exc)) from None
    except ValueError:  # a lone surrogate no file name can encode
        raise InputError(f"the media path {name} is not a valid file name (not encodable); check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{name} is a directory; give one video or image file, or use `vitcop batch` for folders")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{name} is not a regular file; give a video or image file")
    ext = _extension(path)
    if ext not in VIDEO_EXTENSIONS and ext not in IMAGE_EXTENSIONS:
        shown = f"'.{shown_path(ext)}'" if ext else "no extension"
        raise InputError(f"unsupported file type ({shown}) for {name}; supported: {_supported_list()}")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {name}: permission denied; check the file's permissions")
    return ext


def _stat_failure(path: str, exc: OSError) -> str:
    """Why ``os.stat`` could not reach the file at ``path``, in words."""
    name = shown_path(path)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        return f"file not found: {name}; check the path"
    if exc.errno == errno.ENAMETOOLONG:
        return (f"the media path {name[:80]}… ({len(os.fsencode(path)):,} bytes) is too long for the file system "
                "(typically 255 bytes a name, 4,096 a path); check the path")
    if exc.errno == errno.EACCES:
        return f"cannot read {name}: permission denied on a folder of the path; check its permissions"
    return f"cannot read {name}: {exc.strerror or exc}"


def check_frame_size(width: int, height: int, what: str) -> None:
    """InputError unless a ``width`` x ``height`` image or video frame is at most :data:`MAX_IMAGE_PIXELS` and
    its aspect ratio at most :data:`MAX_ASPECT_RATIO` (``what`` names it: ``"image photo.png"``)."""
    if width < 1 or height < 1:
        raise InputError(f"{what} is {width}x{height} pixels: it has no pixels; give another file")
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{what} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); the limit is "
            f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels (decoded, at least {width * height * 3 / 2**20:,.0f} MiB); "
            "scale it down first"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise InputError(
            f"{what} is {width}x{height} pixels, an aspect ratio of {max(width, height) / min(width, height):.0f}:1; "
            f"the limit is {MAX_ASPECT_RATIO}:1 (what the Qwen processors take); crop or pad it"
        )


def load_visual(
    path: str | os.PathLike,
    *,
    fps: float = DEFAULT_FPS,
    frames: int | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    rule: FrameRule = FrameRule(),
    sizing: FrameSizing | None = None,
    decoder: str | None = None,
    decode_device: str = "cpu",
) -> Visual:
    """Load ``path`` (a video or an image, chosen by extension) and sample its frames.

    ``fps`` / ``frames`` / ``max_frames`` are passed to :func:`sample_indices` (``frames``
    overrides ``fps``) with the model family's ``rule`` (``Session.frame_rule``); they are ignored for an
    image. ``sizing`` (``Session.frame_sizing``): the frames are held at the size the model's processor
    uses, decoded and resized in bounded chunks (``None``: source size, the whole clip in memory: the
    reference the ``exact`` oracle compares with). ``decoder``: a backend of :mod:`.decoders` (default
    decord) on ``decode_device``. Raises :class:`InputError` for bad input.
    """
    path_str = os.fsdecode(path)  # bytes too: a name that is not UTF-8 decodes to surrogates, and back
    ext = check_path(path_str)
    if ext in IMAGE_EXTENSIONS:
        return _load_image(path_str)
    return _load_video(path_str, fps=fps, frames=frames, max_frames=max_frames, rule=rule, sizing=sizing,
                       decoder=decoder, decode_device=decode_device)


def _load_image(path: str) -> Visual:
    """Read an image: its size from the header first (:func:`check_frame_size`), only then its pixels."""
    from PIL import Image

    name = shown_path(path)
    if os.path.getsize(path) == 0:
        raise InputError(f"image file {name} is empty (0 bytes); check the file or export it again")
    # Pillow warns on stderr at open for images over 89 megapixels; those are refused here, in one line.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        im = Image.open(path)  # the header only
    except Image.DecompressionBombError as exc:
        raise InputError(f"image {name} is too large ({one_line(str(exc))}); the limit is "
                         f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels; scale it down first") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError...
        raise _unreadable_image(name, exc) from None
    with im:
        check_frame_size(im.width, im.height, f"image {name}")  # before a pixel is decoded
        try:
            im.load()  # force decoding here so truncated / corrupt files fail now
            image = im.convert("RGB")
        except Exception as exc:
            raise _unreadable_image(name, exc) from None
    return image_visual(image, path)


def _unreadable_image(name: str, exc: Exception) -> InputError:
    return InputError(
        f"cannot read image {name}: {one_line(str(exc)) or type(exc).__name__}; "
        "check that it opens in an image viewer, or save it again as PNG/JPEG"
    )


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


def _load_video(path: str, *, fps: float, frames: int | None, max_frames: int, rule: FrameRule,
                sizing: FrameSizing | None, decoder: str | None, decode_device: str) -> Visual:
    """Open ``path`` with the ``decoder`` backend, sample by ``rule``, read the frames in bounded chunks on a
    background thread (:func:`.chunked.read_frames`), at ``sizing``'s target size (source size without one)."""
    # Validate the sampling arguments before touching the file (cheap, clearer error first).
    if frames is None and (fps is None or not math.isfinite(fps) or fps <= 0):
        raise InputError(f"--fps must be a positive number (got {fps})")
    if frames is not None and frames < 1:
        raise InputError(f"--frames must be at least 1 (got {frames})")
    if max_frames is None or max_frames < 1:
        raise InputError(f"--max-frames must be at least 1 (got {max_frames})")
    from . import decoders
    from .chunked import read_frames

    backend = decoders.get(decoder or decoders.DEFAULT_DECODER)
    with backend(path, device=decode_device) as clip:
        info = clip.info()
        check_frame_size(info.width, info.height, f"video {shown_path(path)}")
        total, avg_fps, duration = info.total_frames, info.avg_fps, info.duration_s
        if avg_fps is None and duration is not None:
            avg_fps = total / duration
        if duration is None and avg_fps is not None:
            duration = total / avg_fps
        indices = sample_indices(total, avg_fps, fps=fps, frames=frames, max_frames=max_frames,
                                 per_patch=rule.per_patch)
        source = (info.height, info.width)
        if sizing is None:
            tensor = read_frames(clip, indices, source, source_size=source)
            sink = None
        else:
            size = sizing.target(len(indices), *source)
            sink = sizing.preprocess(len(indices), *size) if sizing.preprocess is not None else None
            tensor = read_frames(clip, indices, size, sizing.resize, source_size=source, sink=sink,
                                    align=sizing.align)
        timestamps = [round(s, 6) for s in clip.timestamps(indices)]
    return Visual(
        kind="video",
        path=path,
        frames=tensor,
        timestamps=timestamps,
        indices=list(indices),
        source_fps=avg_fps,
        total_frames=total,
        duration_s=duration,
        width=info.width,
        height=info.height,
        sampling_fps=(len(indices) / duration) if duration else None,
        warnings=frame_count_warnings(
            total, len(indices), fps=fps, frames=frames, max_frames=max_frames, video_fps=avg_fps, rule=rule
        ),
        processed=None if sink is None else sink.result(),
    )


