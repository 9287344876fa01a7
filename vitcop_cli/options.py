"""Validation of the run options shared by ``ask``, ``batch`` and ``profile``.

Contract: this module is the single place where CLI option combinations (presets, methods,
frame sampling, pixel limits, generation settings) are validated. :func:`check_run_options`
checks them all before any model is loaded or file touched and raises :class:`InputError`
naming the offending option; on success it returns the loaded presets and the methods,
de-duplicated in order (surrounding blanks stripped, empty entries dropped). ``ask``, ``batch``
and ``profile`` all call it before loading a model. It never imports torch or transformers
(presets are read by :mod:`pruning.presets`, methods checked against :mod:`vitcop_cli.catalog`),
so a bad option fails in a fraction of a second.

Every float option must be finite (``nan`` / ``inf`` are refused, in the library too: ``Session``
calls :func:`check_generation_options` and :func:`check_frame_options`). A positive temperature must be
at least :data:`MIN_TEMPERATURE` (logits divided by a smaller one overflow and sampling fails; 0 is greedy).
:func:`check_text` bounds a question or system prompt at :data:`MAX_TEXT_CHARS` characters and refuses
a lone surrogate (text that is not valid Unicode, e.g. undecodable bytes on the command line) before
anything tokenises it;
the model-derived bound (prompt tokens + ``max_new_tokens`` <= the model's maximum positions) is
checked by ``Session``. :func:`check_seed` bounds ``--seed`` to what torch accepts.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

from .errors import InputError

__all__ = [
    "MAX_TEXT_CHARS", "MIN_TEMPERATURE", "SEED_MAX", "check_finite", "check_frame_options", "check_generation_options",
    "check_decoding", "check_run_options", "check_seed", "check_text", "unique_names",
]

MAX_TEXT_CHARS = 1_000_000  # a question / system prompt longer than this is refused before tokenising
SEED_MAX = 2**63 - 1
# The smallest positive temperature: logits / temperature must stay finite in float32 (generate samples in
# float32, and they overflow near 1e-38); 1e-6 leaves a margin of 1e32 over any real logit, and sampling that
# cold is greedy anyway. ``vitcop serve`` uses the same floor.
MIN_TEMPERATURE = 1e-6


def check_text(text: str | None, what: str = "the question", limit: int = MAX_TEXT_CHARS) -> None:
    """InputError when ``text`` is longer than ``limit`` characters or holds a lone surrogate (``None`` passes)."""
    if text is None:
        return
    if len(text) > limit:
        raise InputError(
            f"{what} is {len(text):,} characters long; the limit is {limit:,} (and the model's context)"
        )
    at = _surrogate_at(text)
    if at is not None:
        raise InputError(
            f"{what} is not valid Unicode: a lone surrogate {ascii(text[at])} at character {at + 1} "
            "(undecodable bytes?); give UTF-8 text"
        )


def _surrogate_at(text: str) -> int | None:
    """Index of the first lone surrogate (U+D800..U+DFFF) in ``text``, or ``None``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def check_seed(seed: int | None, option: str = "--seed") -> None:
    """InputError unless ``seed`` is None or an integer in [0, SEED_MAX]."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        shown = str(seed) if len(str(seed)) <= 30 else str(seed)[:29] + "…"
        raise InputError(f"{option} must be an integer from 0 to {SEED_MAX} (2**63 - 1), got {shown}")


def check_finite(name: str, value: float | None) -> None:
    """InputError naming option ``name`` when ``value`` is nan or infinite (``None`` passes)."""
    if value is not None and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}")


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
    seed: int | None = None,
    system: str | None = None,
    resize: str = "fast",
    decoder: str | None = None,
    decode_device: str = "cpu",
) -> tuple[list, list[str]]:
    """(loaded presets, methods), de-duplicated in order; :class:`InputError` for any bad option."""
    from pruning.presets import PresetError, load_preset

    from .catalog import METHODS

    preset_names, method_names = unique_names(presets), unique_names(methods)
    if not preset_names:
        raise InputError("--presets is empty; give comma-separated presets, e.g. none,1_3,1_9")
    if not method_names:
        raise InputError("--methods is empty; give comma-separated methods, e.g. vitcop,fastv")
    loaded, seen = [], set()
    for p in preset_names:
        try:
            preset = load_preset(p)
        except PresetError as exc:
            raise InputError(str(exc)) from None
        if preset.label in seen:
            raise InputError(f"--presets names preset {preset.label!r} twice")
        seen.add(preset.label)
        loaded.append(preset)
    for m in method_names:
        if m not in METHODS:
            raise InputError(f"unknown pruning method {m!r}; choose one of {', '.join(METHODS)}")
    check_frame_options(fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels, min_pixels=min_pixels)
    check_decoding(resize, decoder, decode_device)
    check_generation_options(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    check_seed(seed)
    check_text(system, "--system")
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
    check_finite("--fps", fps)
    if fps is not None and not fps > 0:
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
    check_finite("--temperature", temperature)
    check_finite("--top-p", top_p)
    if max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    if temperature < 0:
        raise InputError("--temperature must be >= 0 (0 = greedy)")
    if 0 < temperature < MIN_TEMPERATURE:
        raise InputError(
            f"--temperature {temperature:g} is too small to sample with (logits / temperature overflow); "
            f"give 0 for greedy decoding or at least {MIN_TEMPERATURE:g}"
        )
    if top_p is not None and not 0 < top_p <= 1:
        raise InputError("--top-p must be in (0, 1]")
    if top_p is not None and temperature == 0:
        raise InputError("--top-p needs --temperature > 0 (temperature 0 is greedy decoding)")


#: ``--resize``: the decoder scales each frame (fast) or the processor's own resize does, chunk by chunk (exact)
RESIZE_MODES = ("fast", "exact")


def check_decoding(resize: str = "fast", decoder: str | None = None, decode_device: str = "cpu") -> None:
    """InputError for a ``--resize`` / ``--decoder`` / ``--decode-device`` that cannot be used (no decoding
    library is imported: whether an installed backend works is told when it opens, by
    :func:`vitcop_cli.media.decoders.get`)."""
    from .media.decoders import DECODERS

    if resize not in RESIZE_MODES:
        raise InputError(f"--resize must be one of {', '.join(RESIZE_MODES)} (got {str(resize)[:40]!r})")
    if decoder is not None and decoder not in DECODERS:
        raise InputError(f"--decoder must be one of {', '.join(DECODERS)} (got {str(decoder)[:40]!r})")
    if not re.fullmatch(r"cpu|cuda(:\d{1,3})?", str(decode_device)):
        raise InputError(f"--decode-device must be cpu, cuda or cuda:N (got {str(decode_device)[:40]!r})")
    if decode_device != "cpu" and decoder != "torchcodec":
        raise InputError("--decode-device cuda decodes with NVDEC, which only --decoder torchcodec offers")
