"""Validation of the run options shared by ``ask``, ``batch`` and ``profile``.

Contract: this module is the single place where CLI option combinations (presets, methods,
frame sampling, pixel limits, generation settings) are validated. :func:`check_run_options`
checks them all before any model is loaded or file touched and raises :class:`InputError`
naming the offending option; on success it returns the loaded presets and the methods,
de-duplicated in order (surrounding blanks stripped, empty entries dropped). ``ask``, ``batch``
and ``profile`` all call it before loading a model. :mod:`vitcop_cli.api` is imported lazily, so
importing this module stays cheap (no torch).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from .errors import InputError

__all__ = ["check_frame_options", "check_generation_options", "check_run_options", "unique_names"]


def unique_names(xs: Iterable[str]) -> list[str]:
    """Names in first-seen order, blanks stripped, empty entries and repeats dropped."""
    out: list[str] = []
    for x in xs:
        x = x.strip()
        if x and x not in out:
            out.append(x)
    return out


def check_run_options(
    presets: Sequence[str],
    methods: Sequence[str],
    *,
    fps: float | None = None,
    frames: int | None = None,
    max_frames: int = 768,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float | None = None,
) -> tuple[list, list[str]]:
    """(loaded presets, methods), de-duplicated in order; :class:`InputError` for any bad option."""
    from . import api

    preset_names, method_names = unique_names(presets), unique_names(methods)
    if not preset_names:
        raise InputError("--presets is empty; give comma-separated presets, e.g. none,1_3,1_9")
    if not method_names:
        raise InputError("--methods is empty; give comma-separated methods, e.g. vitcop,fastv")
    loaded, seen = [], set()
    for p in preset_names:
        preset = api.check_preset(p)
        if preset.name in seen:
            raise InputError(f"--presets names preset {preset.name!r} twice")
        seen.add(preset.name)
        loaded.append(preset)
    for m in method_names:
        api.check_method(m)
    check_frame_options(fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels, min_pixels=min_pixels)
    check_generation_options(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    return loaded, method_names


def check_frame_options(
    *,
    fps: float | None = None,
    frames: int | None = None,
    max_frames: int = 768,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
) -> None:
    """Frame sampling and per-frame pixel bounds (also used by the library's ``Session.ask``)."""
    if fps is not None and frames is not None:
        raise InputError("--fps and --frames are mutually exclusive; give one of them")
    if frames is not None and frames < 1:
        raise InputError("--frames must be at least 1")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise InputError("--fps must be positive")
    if max_frames < 1:
        raise InputError("--max-frames must be at least 1")
    if max_pixels is not None and max_pixels < 1:
        raise InputError("--max-pixels must be at least 1")
    if min_pixels is not None and min_pixels < 1:
        raise InputError("--min-pixels must be at least 1")
    if max_pixels is not None and min_pixels is not None and min_pixels > max_pixels:
        raise InputError(f"--min-pixels ({min_pixels}) is larger than --max-pixels ({max_pixels})")


def check_generation_options(*, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float | None = None) -> None:
    """Generation settings (also used by the library's ``Session.generate``)."""
    if max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    if temperature < 0:
        raise InputError("--temperature must be >= 0 (0 = greedy)")
    if top_p is not None and not 0 < top_p <= 1:
        raise InputError("--top-p must be in (0, 1]")
    if top_p is not None and temperature == 0:
        raise InputError("--top-p needs --temperature > 0 (temperature 0 is greedy decoding)")
