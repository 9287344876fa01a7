"""Model arguments and per-request generation settings of the lmms-eval ``vitcop`` model (pure; no torch).

Contract:

- :func:`parse_model_args` turns the keyword arguments lmms-eval passes to the model class (parsed
  from ``--model_args k=v,...`` plus ``batch_size`` / ``max_batch_size`` / ``device``) into a frozen
  :class:`ModelArgs`, validated before any model is loaded; a bad value raises
  :class:`~vitcop_cli.errors.InputError` naming the argument. Unknown arguments are refused (a typo
  must not silently fall back to a default).
- lmms-eval's ``--model_args`` parser turns every value that ``float()`` accepts into a number, and
  Python's ``float()`` accepts digit separators: ``preset=1_9`` arrives as ``19.0`` (``1_3`` as
  ``13.0``). :func:`preset_name` maps such a number back to the one built-in preset whose name
  ``float()`` reads as that number, and refuses it when there is none.
- :func:`generation_settings` maps one request's ``generation_kwargs`` (from the task YAML, with
  lmms-eval's ``--gen_kwargs`` merged in) onto :class:`GenerationSettings`: greedy unless
  ``do_sample`` is true and ``temperature > 0``; ``max_new_tokens`` falls back to the model argument;
  ``until`` (str or list) becomes stop strings; a frame count given by the task as ``num_frames``
  (or ``nframes``) overrides the model's ``fps`` sampling; ``num_beams > 1`` is refused. Other keys
  (task-specific hints meant for other models, e.g. ``image_aspect_ratio``) are ignored.
- :func:`question_text` is the question vitcop asks for a request's context: lmms-eval's ``<image>``
  / ``<video>`` placeholders removed (the visual is placed by the checkpoint's chat template), blanks
  stripped. :func:`cut_at_stop` truncates an answer at the first stop string.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitcop_cli.defaults import DEFAULT_METHOD, DEFAULT_PRESET
from vitcop_cli.errors import InputError

__all__ = [
    "FRAME_COUNT_KEYS",
    "GenerationSettings",
    "ModelArgs",
    "cut_at_stop",
    "generation_settings",
    "parse_model_args",
    "preset_name",
    "question_text",
]

FRAME_COUNT_KEYS = ("num_frames", "nframes")  # generation_kwargs keys through which a task fixes its frame count
DEFAULT_MAX_NEW_TOKENS = 256
PLACEHOLDERS = ("<image>", "<video>")


@dataclass(frozen=True)
class ModelArgs:
    """What ``--model_args`` configures (one model load for the whole run)."""

    pretrained: str
    preset: str = DEFAULT_PRESET
    method: str = DEFAULT_METHOD
    fps: float | None = None  # None: vitcop's default (2 frames per second)
    max_frames: int = 768
    max_pixels: int | None = None
    min_pixels: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "auto"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # used when the task's generation_kwargs set none
    system: str | None = None
    offline: bool = False
    batch_size: int = 1
    resize: str = "exact"  # the reference preprocessing (published numbers); resize=fast lets the decoder scale
    decoder: str = "decord"
    decode_device: str = "cpu"


@dataclass(frozen=True)
class GenerationSettings:
    """How one request is answered."""

    max_new_tokens: int
    temperature: float  # 0 = greedy
    top_p: float | None
    stop: tuple[str, ...]
    frames: int | None  # exact frame count fixed by the task, else None (sample by fps)


def preset_name(value) -> str:
    """The preset to load for a ``preset=`` model argument (see the module docstring for numbers)."""
    from pruning.presets import builtin_presets

    if isinstance(value, bool):
        raise InputError(f"preset={value} is not a preset; give a preset name ({', '.join(builtin_presets())}) or a YAML path")
    if isinstance(value, (int, float)):
        matches = [name for name in builtin_presets() if _as_number(name) == float(value)]
        if len(matches) == 1:
            return matches[0]
        raise InputError(
            f"preset={value!r}: lmms-eval read this preset as a number; give a preset name "
            f"({', '.join(builtin_presets())}) or a YAML path"
        )
    if not isinstance(value, str) or not value.strip():
        raise InputError("preset= is empty; give a preset name or a YAML path")
    return value.strip()


def _as_number(name: str) -> float | None:
    try:
        return float(name)
    except ValueError:
        return None


_INT_ARGS = ("max_frames", "max_pixels", "min_pixels", "max_new_tokens")
_STR_ARGS = ("pretrained", "method", "device", "dtype", "attn", "system", "resize", "decoder", "decode_device")


def parse_model_args(**kwargs) -> ModelArgs:
    """Validated :class:`ModelArgs` from lmms-eval's keyword arguments (see the module docstring)."""
    from vitcop_cli import api
    from vitcop_cli.options import check_decoding, check_frame_options, check_generation_options

    known = set(ModelArgs.__dataclass_fields__) | {"max_batch_size"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise InputError(
            f"unknown vitcop model argument(s): {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known - {'max_batch_size'}))}"
        )
    if not kwargs.get("pretrained"):
        raise InputError(
            "model_args needs pretrained=<Hugging Face id, local checkpoint folder or demo model such as tiny:qwen2_vl>"
        )
    kwargs.pop("max_batch_size", None)
    values: dict = {}
    for key, value in kwargs.items():
        if value is None:
            continue
        if key == "preset":
            value = preset_name(value)
        elif key in _STR_ARGS:
            value = str(value)
        elif key in _INT_ARGS or key == "batch_size":
            value = _integer(key, value)
        elif key == "fps":
            value = _number(key, value)
        elif key == "offline":
            if not isinstance(value, bool):
                raise InputError(f"offline={value!r}: give true or false")
        values[key] = value
    args = ModelArgs(**values)
    if args.batch_size != 1:
        raise InputError(f"batch_size={args.batch_size}: the vitcop model answers one request at a time; use --batch_size 1")
    api.check_preset(args.preset)
    api.check_method(args.method)
    check_frame_options(fps=args.fps, max_frames=args.max_frames, max_pixels=args.max_pixels, min_pixels=args.min_pixels)
    check_generation_options(max_new_tokens=args.max_new_tokens)
    check_decoding(args.resize, args.decoder, args.decode_device)
    return args


def _integer(key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError(f"{key}={value!r} is not an integer")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{key}={value!r} is not an integer") from None
    if not number.is_integer():
        raise InputError(f"{key}={value!r} is not an integer")
    return int(number)


def _number(key: str, value) -> float:
    if isinstance(value, bool):
        raise InputError(f"{key}={value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{key}={value!r} is not a number") from None


def generation_settings(gen_kwargs: dict | None, defaults: ModelArgs) -> GenerationSettings:
    """:class:`GenerationSettings` for one request (see the module docstring)."""
    from vitcop_cli.options import check_finite, check_generation_options

    gen = dict(gen_kwargs or {})
    beams = gen.get("num_beams")
    if beams is not None and _integer("num_beams", beams) > 1:
        raise InputError(f"num_beams={beams}: the vitcop model decodes greedily or by sampling; beam search is not supported")
    max_new = gen.get("max_new_tokens")
    max_new_tokens = defaults.max_new_tokens if max_new is None else _integer("max_new_tokens", max_new)
    temperature = 0.0 if gen.get("temperature") is None else _number("temperature", gen["temperature"])
    check_finite("--temperature", temperature)  # nan would pass every comparison below
    sampling = bool(gen.get("do_sample", temperature > 0)) and temperature > 0
    top_p = gen.get("top_p")
    top_p = _number("top_p", top_p) if sampling and top_p is not None else None
    if not sampling:
        temperature = min(temperature, 0.0)  # greedy whatever temperature is named; a negative one is refused
    check_generation_options(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    until = gen.get("until")
    if until is None:
        stop: tuple[str, ...] = ()
    elif isinstance(until, str):
        stop = (until,)
    elif isinstance(until, (list, tuple)) and all(isinstance(s, str) for s in until):
        stop = tuple(until)
    else:
        raise InputError(f"generation_kwargs until={until!r}: give a string or a list of strings")
    frames = None
    for key in FRAME_COUNT_KEYS:
        if gen.get(key) is not None:
            frames = _integer(key, gen[key])
            if frames < 1:
                raise InputError(f"generation_kwargs {key}={gen[key]!r}: the frame count must be at least 1")
            break
    return GenerationSettings(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=tuple(s for s in stop if s),
        frames=frames,
    )


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


def question_text(context) -> str:
    """The question for a request's context (see the module docstring)."""
    text = context if isinstance(context, str) else str(context)
    for placeholder in PLACEHOLDERS:
        text = text.replace(placeholder, "")
    return text.strip()
