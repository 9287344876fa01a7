"""Library entry points: ``load(...) -> Session`` once, then ``Session.ask(...) -> AskResult`` many times.

The CLI only parses arguments and renders what these return. Contract:

- ``load`` resolves device / dtype / attention, reads the config first (an unsupported
  ``model_type`` fails before any weight is read), then loads the model's own ``AutoProcessor`` and
  weights (``local_files_only`` everywhere when ``offline``).
- ``Session.prepare`` turns a decoded clip / image and a question into the processor's inputs,
  through the checkpoint's own chat template and processor (its frame sampling turned off: frames
  are sampled by :mod:`vitcop_cli.video`).
- ``Session.generate`` runs ``model.generate`` on prepared inputs under a pruning preset and returns
  the result with timings (CUDA synchronized before every clock read) and peak memory.
- ``Session.ask`` = decode + prepare + generate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from pruning import attach
from pruning.adapters import UnsupportedModelError, adapter_class
from pruning.methods import method_class, method_names
from pruning.presets import Preset, PresetError, builtin_presets, load_preset

from .defaults import DEFAULT_METHOD, DEFAULT_MODEL, DEFAULT_PRESET
from .errors import InputError, RuntimeFailure
from .options import check_frame_options, check_generation_options
from .result import AskResult, TokenCounts, Timings, VisualInfo
from .runtime import Clock, MemoryMeter, resolve_attn, resolve_device, resolve_dtype
from .streaming import CallbackStreamer
from .video import Visual, load_visual

__all__ = ["DEFAULT_METHOD", "DEFAULT_MODEL", "DEFAULT_PRESET", "Prepared", "Session", "load"]


@dataclass
class Prepared:
    """Processor outputs for one (visual, question), on the session's device, plus bookkeeping."""

    inputs: dict
    visual: Visual
    question: str
    preprocess_s: float
    warnings: list[str]


def load(
    model: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    dtype: str = "auto",
    attn: str = "auto",
    offline: bool = False,
) -> "Session":
    """Load a supported checkpoint (Hugging Face id or local folder) once."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    attn_impl = resolve_attn(attn, dev)
    started = time.perf_counter()
    try:
        config = AutoConfig.from_pretrained(model, local_files_only=offline)
    except (OSError, ValueError) as exc:
        _check_declared_model_type(model)  # a model_type transformers does not know: name the supported ones
        raise InputError(_load_error(model, offline, exc)) from exc
    try:
        adapter_cls = adapter_class(config.model_type)
    except UnsupportedModelError as exc:
        raise InputError(f"{model}: {exc}") from None
    try:
        processor = AutoProcessor.from_pretrained(model, local_files_only=offline)
        hf_model = AutoModelForImageTextToText.from_pretrained(
            model,
            dtype=torch_dtype,
            attn_implementation=attn_impl,
            local_files_only=offline,
            device_map=str(dev) if dev.type == "cuda" else None,
        )
    except (OSError, ValueError) as exc:
        raise InputError(_load_error(model, offline, exc)) from exc
    except torch.cuda.OutOfMemoryError as exc:
        raise RuntimeFailure(f"{model}: out of GPU memory while loading; try a smaller model or --dtype float16") from exc
    hf_model.to(dev).eval()
    clock = Clock(dev)
    return Session(
        name=model,
        model=hf_model,
        processor=processor,
        adapter=adapter_cls(hf_model),
        device=dev,
        attn_implementation=attn_impl,
        load_s=clock.now() - started,
    )


def model_identity(model: str) -> str:
    """How results, resume keys and labels name a model: a local folder's resolved absolute path (so
    ``./m``, ``m/`` and ``/abs/m`` are one model), or the hub id exactly as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def _check_declared_model_type(model: str) -> None:
    """InputError listing the supported types when local ``model/config.json`` declares an unsupported one."""
    import json

    try:
        declared = json.loads((Path(model) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(declared, str):
        try:
            adapter_class(declared)
        except UnsupportedModelError as exc:
            raise InputError(f"{model}: {exc}") from None


def _load_error(model: str, offline: bool, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if offline and not Path(model).exists():
        return (
            f"model {model!r} is not in the local Hugging Face cache and --offline forbids downloading; "
            "run once without --offline or pass a local folder"
        )
    if Path(model).exists():
        return f"{model}: not a loadable checkpoint folder ({first})"
    return f"could not load model {model!r}: {first} (check the id, your network, or use a local folder)"


class Session:
    """A loaded model + processor; ask it as many questions as you like."""

    def __init__(self, *, name, model, processor, adapter, device, attn_implementation, load_s=None):
        self.name = name
        self.model = model
        self.processor = processor
        self.adapter = adapter
        self.device = device
        self.attn_implementation = attn_implementation
        self.load_s = load_s
        self._clock = Clock(device)
        self._memory = MemoryMeter(device)

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    # ---- steps ---------------------------------------------------------------------------
    def prepare(
        self,
        visual: Visual,
        question: str,
        *,
        system: str | None = None,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
    ) -> Prepared:
        check_frame_options(max_pixels=max_pixels, min_pixels=min_pixels)
        started = time.perf_counter()  # CPU work: never wait on the GPU here (batch prepares in a thread)
        messages = []
        if system:
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        messages.append(
            {"role": "user", "content": [{"type": visual.kind}, {"type": "text", "text": question}]}
        )
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        extra, warnings = self.adapter.processor_kwargs(
            self.processor, visual.kind, max_pixels=max_pixels, min_pixels=min_pixels
        )
        media = {"videos": [visual.frames]} if visual.kind == "video" else {"images": [visual.frames]}
        batch = self.processor(text=[text], return_tensors="pt", **media, **extra)
        inputs = {
            k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in batch.items()
            if isinstance(v, torch.Tensor)
        }
        return Prepared(inputs, visual, question, time.perf_counter() - started, warnings)

    def generate(
        self,
        prepared: Prepared,
        *,
        preset: str | Preset = DEFAULT_PRESET,
        method: str = DEFAULT_METHOD,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float | None = None,
        on_text: Callable[[str], None] | None = None,
        video_decode_s: float = 0.0,
        seed: int | None = None,
    ) -> AskResult:
        """Generate an answer for ``prepared``. ``seed`` seeds torch's generators first, so sampling
        (temperature > 0) is reproducible run to run; it is recorded in the result."""
        preset = _as_preset(preset)
        check_method(method)
        check_generation_options(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p if top_p is not None else 1.0, "top_k": 0}
            if temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        streamer = CallbackStreamer(self.processor.tokenizer, on_text) if on_text else None
        timer = _ForwardTimer(self.model, self.adapter.vision_encoder, self._clock)
        if seed is not None:
            torch.manual_seed(seed)  # seeds CUDA / MPS generators too
        self._memory.reset()
        try:
            with attach(self.model, preset, method) as handle, timer:
                handle.bind(prepared.inputs)
                started = self._clock.now()
                output = self.model.generate(
                    **prepared.inputs, max_new_tokens=max_new_tokens, streamer=streamer, **sampling
                )
                finished = self._clock.now()
        except torch.cuda.OutOfMemoryError as exc:
            raise RuntimeFailure(
                "out of GPU memory during generation; try a stronger preset, fewer frames or lower --max-pixels"
            ) from exc
        memory = self._memory.read()
        prompt_len = prepared.inputs["input_ids"].shape[1]
        generated = output[0, prompt_len:].tolist()
        answer = self.processor.tokenizer.decode(generated, skip_special_tokens=True).strip()
        ttft = timer.first_forward_end - started
        decode_s = finished - timer.first_forward_end
        pruning_report = handle.report(prepared.inputs["input_ids"])
        visual = prepared.visual
        n_visual = int(self.adapter.visual_mask(prepared.inputs["input_ids"]).sum())
        return AskResult(
            answer=answer,
            question=prepared.question,
            model=self.name,
            model_type=self.model_type,
            preset=preset.label,
            method=method,
            device=str(self.device),
            dtype=str(self.dtype).replace("torch.", ""),
            attn_implementation=self.attn_implementation,
            visual=VisualInfo(
                path=visual.path,
                kind=visual.kind,
                frames=len(visual.timestamps),
                sampling_fps=visual.sampling_fps,
                source_fps=visual.source_fps,
                duration_s=visual.duration_s,
                timestamps=[round(t, 4) for t in visual.timestamps],
                width=visual.width,
                height=visual.height,
                processed_grid=_grid(prepared.inputs),
            ),
            tokens=TokenCounts(prompt=prompt_len, visual=n_visual, generated=len(generated)),
            timings=Timings(
                model_load_s=self.load_s,
                video_decode_s=video_decode_s,
                preprocess_s=prepared.preprocess_s,
                vision_encoder_s=timer.vision_s,
                prefill_s=ttft - timer.vision_s,
                ttft_s=ttft,
                decode_s=decode_s,
                decode_tokens_per_s=(len(generated) - 1) / decode_s if len(generated) > 1 and decode_s > 0 else None,
                pruning_s=handle.seconds,
                total_s=video_decode_s + prepared.preprocess_s + (finished - started),
            ),
            memory=memory,
            pruning=pruning_report,
            generated_ids=generated,
            warnings=list(prepared.warnings),
            versions=_versions(),
            seed=seed,
        )

    def ask(
        self,
        video: str | Path,
        question: str,
        *,
        preset: str | Preset = DEFAULT_PRESET,
        method: str = DEFAULT_METHOD,
        fps: float | None = None,
        frames: int | None = None,
        max_frames: int = 768,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
        system: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float | None = None,
        on_text: Callable[[str], None] | None = None,
        seed: int | None = None,
    ) -> AskResult:
        """Answer ``question`` about ``video`` (a clip or an image file)."""
        preset = _as_preset(preset)  # fail on a bad preset / method before decoding anything
        check_method(method)
        check_frame_options(fps=fps, frames=frames, max_frames=max_frames)
        if not question.strip():
            raise InputError("the question is empty")
        started = time.perf_counter()
        visual = load_visual(video, fps=2.0 if fps is None else fps, frames=frames, max_frames=max_frames)
        decode_s = time.perf_counter() - started
        prepared = self.prepare(visual, question, system=system, max_pixels=max_pixels, min_pixels=min_pixels)
        return self.generate(
            prepared,
            preset=preset,
            method=method,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            on_text=on_text,
            video_decode_s=decode_s,
            seed=seed,
        )


def check_method(method: str) -> str:
    """``method`` if it names a registered pruning method, else an InputError listing them."""
    if method not in method_names():
        raise InputError(f"unknown pruning method {method!r}; choose one of {', '.join(method_names())}")
    return method


def list_methods() -> list[tuple[str, str]]:
    """(name, one-line description) of every pruning method."""
    return [(name, method_class(name).description) for name in method_names()]


def check_preset(preset: str | Preset) -> Preset:
    """The preset named (built-in name or YAML path), or an InputError naming what is wrong."""
    return _as_preset(preset)


def quiet_library_logs(debug: bool = False) -> None:
    """Silence transformers' info/warning chatter and progress bars (kept with ``debug``)."""
    from transformers.utils import logging as hf_logging

    if not debug:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


@dataclass
class PresetRow:
    """One line of ``vitcop presets``: a preset and the budgets it gives at a model depth."""

    name: str
    description: str
    ratio: float
    vision_keep: float
    n_visual: int
    n_layers: int
    V: int
    Rs: int
    Rd: int
    shallow_layer: int | None
    deep_layer: int | None
    layer_averaged: float


def preset_table(*, model: str | None = None, n_visual: int = 4096, offline: bool = False) -> list[PresetRow]:
    """Budgets of every built-in preset for ``model``'s LLM depth (32 layers when no model is given)."""
    n_layers = 32
    if model is not None:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(model, local_files_only=offline)
        except (OSError, ValueError) as exc:
            raise InputError(_load_error(model, offline, exc)) from exc
        n_layers = config.get_text_config().num_hidden_layers
    if n_visual < 1:
        raise InputError("--visual-tokens must be at least 1")
    rows = []
    for name in builtin_presets():
        p = load_preset(name)
        if p.is_identity:
            rows.append(PresetRow(name, p.description, p.ratio, p.vision_keep, n_visual, n_layers,
                                  n_visual, n_visual, n_visual, None, None, float(n_visual)))
            continue
        try:
            b = p.budgets(n_visual, n_layers)
        except PresetError as exc:
            raise InputError(str(exc)) from None
        rows.append(PresetRow(name, p.description, p.ratio, p.vision_keep, n_visual, n_layers, b.V, b.Rs, b.Rd,
                              b.shallow_layer, b.deep_layer, b.layer_averaged))
    return sorted(rows, key=lambda r: -r.ratio)


def _as_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return load_preset(preset)
    except PresetError as exc:
        raise InputError(str(exc)) from None


def _grid(inputs: dict) -> list[int] | None:
    for key in ("video_grid_thw", "image_grid_thw"):
        if key in inputs:
            return [int(x) for x in inputs[key][0].tolist()]
    return None


def _versions() -> dict[str, str]:
    import transformers

    from . import __version__

    return {"vitcop": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


class _ForwardTimer:
    """Times the vision encoder and the end of the model's first forward (prefill) via hooks."""

    def __init__(self, model, vision_encoder, clock: Clock):
        self.model, self.vision_encoder, self.clock = model, vision_encoder, clock
        self.vision_s = 0.0
        self.first_forward_end: float | None = None
        self._handles: list = []

    def __enter__(self):
        def vision_start(*_):
            self._vision_started = self.clock.now()

        def vision_end(*_):
            self.vision_s += self.clock.now() - self._vision_started

        def forward_end(*_):
            if self.first_forward_end is None:
                self.first_forward_end = self.clock.now()

        self._handles = [
            self.vision_encoder.register_forward_pre_hook(vision_start),
            self.vision_encoder.register_forward_hook(vision_end),
            self.model.register_forward_hook(forward_end),
        ]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        return False
