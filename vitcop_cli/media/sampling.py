"""Which frames of a clip a model sees: qwen-vl-utils' frame-count rule, rounded by the model family's grouping.

Contract: pure functions of their arguments (torch only for ``linspace``, imported lazily, so importing this
module is cheap). :func:`sample_indices` picks the indices, :class:`FrameRule` is a family's grouping of frames
into temporal patches (``Session.frame_rule``), :func:`frame_count_warnings` words what the user asked for and
did not get.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError

__all__ = ["DEFAULT_FPS", "DEFAULT_MAX_FRAMES", "FRAME_FACTOR", "FrameRule", "frame_count_warnings", "sample_indices"]

# qwen-vl-utils defaults.
FRAME_FACTOR = 2
DEFAULT_FPS = 2.0
DEFAULT_MIN_FRAMES = 4
DEFAULT_MAX_FRAMES = 768


@dataclass(frozen=True)
class FrameRule:
    """How a model family groups video frames: counts are rounded to a multiple of ``per_patch`` (frames per
    temporal patch; 2 for Qwen, 1 for LLaVA-OneVision, which encodes every frame alone), and ``reason`` says why
    in the ``--frames`` warning. A session builds it from its adapter (``Session.frame_rule``); the default is
    qwen-vl-utils' (``FRAME_FACTOR``)."""

    per_patch: int = FRAME_FACTOR
    reason: str = "frames are paired into temporal patches"


def _round_to(x: float, k: int) -> int:
    # qwen-vl-utils' round_by_factor: Python's round(), i.e. ties go to the even quotient
    # (k = 2: 5 -> round(2.5) * 2 = 4, 7 -> round(3.5) * 2 = 8).
    return round(x / k) * k


def _ceil_to(x: float, k: int) -> int:
    return math.ceil(x / k) * k


def _floor_to(x: float, k: int) -> int:
    return math.floor(x / k) * k


def sample_indices(
    total_frames: int,
    video_fps: float | None,
    *,
    fps: float = DEFAULT_FPS,
    frames: int | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    min_frames: int = DEFAULT_MIN_FRAMES,
    per_patch: int = FRAME_FACTOR,
) -> list[int]:
    """Indices (sorted, distinct, in ``[0, total_frames)``) of the frames to feed the model.

    The count ``n`` follows qwen-vl-utils' ``smart_nframes``, with "even" below meaning "a multiple of
    ``per_patch``" (the family's :class:`FrameRule`; 2 as in qwen-vl-utils, 1 rounds nothing):

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
        cap = _floor_to(max_frames, per_patch) if max_frames >= per_patch else 1
        n = min(max(_round_to(frames, per_patch), per_patch), cap)
    else:
        if fps is None or not math.isfinite(fps) or fps <= 0:
            raise InputError(f"--fps must be a positive number (got {fps})")
        if video_fps is None or not math.isfinite(video_fps) or video_fps <= 0:
            raise InputError(
                "the video's frame rate is unknown, so it cannot be sampled by rate; "
                "ask for a fixed number of frames instead (--frames N)"
            )
        lo = _ceil_to(min_frames, per_patch)
        hi = _floor_to(min(max_frames, total_frames), per_patch)
        if total_frames < lo and total_frames <= max_frames:
            n = total_frames  # clip shorter than the minimum: use every frame once
        else:
            n = total_frames / video_fps * fps
            n = min(max(n, lo), hi)
            n = _round_to(n, per_patch)
    n = max(1, min(n, total_frames))
    if n >= total_frames:
        return list(range(total_frames))
    import torch  # lazily: importing this module stays cheap (the CLI's fast paths use its constants)

    return torch.linspace(0, total_frames - 1, n).round().long().tolist()


def frame_count_warnings(
    total: int, used: int, *, fps: float, frames: int | None, max_frames: int, video_fps: float | None = None,
    rule: FrameRule = FrameRule(),
) -> list[str]:
    """What the user asked for and did not get, in words (``[]`` when the count is as asked).

    ``--frames N``: rounded to a multiple of ``rule.per_patch`` (2: 1 -> 2, 3 -> 4, 5 -> 4, 7 -> 8), capped by
    ``--max-frames`` and by the clip's length. ``--fps``: capped by ``--max-frames`` (the minimum of 4
    frames and the clip's length are documented and not reported)."""
    out = []
    if frames is not None and used != frames:
        if used >= total and frames > total:
            why = f"the clip has only {total} frame{'s' if total != 1 else ''}, all used"
        elif frames > max_frames and used <= max_frames:
            why = f"capped by --max-frames {max_frames}"
        else:
            multiple = "an even number" if rule.per_patch == 2 else f"a multiple of {rule.per_patch}"
            why = f"frame counts are rounded to {multiple} ({rule.reason})"
        out.append(f"--frames {frames}: using {used} frame{'s' if used != 1 else ''}; {why}")
    elif frames is None and video_fps and total / video_fps * fps > max_frames and used < total:
        out.append(f"--fps {fps:g}: capped at --max-frames {max_frames} ({used} frame{'s' if used != 1 else ''}); "
                   "raise --max-frames or lower --fps")
    return out
