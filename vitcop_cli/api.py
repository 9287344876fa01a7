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
from pruning.presets import Preset, PresetError, load_preset
from pruning.stats import ratio_warning
from pruning.verify import PruningNotApplied, UnsupportedGeneration

from .defaults import DEFAULT_METHOD, DEFAULT_MODEL, DEFAULT_PRESET
from .errors import InputError, RuntimeFailure
from .options import check_frame_options, check_generation_options, check_text
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
    """Load a supported checkpoint (Hugging Face id or local folder) once.

    Order (each step fails with one line before the next starts): device / dtype / attention;
    the checkpoint's ``config.json`` alone (:func:`vitcop_cli.model_ref.declared_config`: a
    path-like ``model`` that does not exist, a hub id offline and not cached, no network: fast
    InputErrors); its declared ``model_type`` against the adapter registry; only then
    transformers' ``from_pretrained`` for config, processor and weights, every one with
    ``trust_remote_code=False``, so no code shipped with a checkpoint ever runs and transformers
    never asks whether it may.
    """
    from .model_ref import check_model_type, declared_config, is_path_like

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    attn_impl = resolve_attn(attn, dev)
    started = time.perf_counter()
    declared, offline = declared_config(model, offline=offline)  # config.json only: no code, no weights
    model_type = check_model_type(model, declared)
    try:
        adapter_cls = adapter_class(model_type)
    except UnsupportedModelError as exc:
        raise InputError(f"{model}: {exc}") from None
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    source = str(Path(model).expanduser()) if is_path_like(model) else model
    common = {"local_files_only": offline, "trust_remote_code": False}
    try:
        config = AutoConfig.from_pretrained(source, **common)
        if config.model_type != model_type:
            raise InputError(f"{model}: config.json declares {model_type!r} but transformers reads {config.model_type!r}")
        processor = AutoProcessor.from_pretrained(source, **common)
        hf_model = AutoModelForImageTextToText.from_pretrained(
            source,
            config=config,
            dtype=torch_dtype,
            attn_implementation=attn_impl,
            device_map=str(dev) if dev.type == "cuda" else None,
            **common,
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


def _load_error(model: str, offline: bool, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if offline and not Path(model).exists():
        return (
            f"model {model!r} is not (completely) in the local Hugging Face cache and offline mode forbids "
            "downloading; run once online, or pass a local folder"
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

    @property
    def n_layers(self) -> int:
        """Decoder layers of the LLM."""
        return int(self.model.config.get_text_config().num_hidden_layers)

    @property
    def max_positions(self) -> int | None:
        """The LLM's maximum positions (``max_position_embeddings``): prompt + answer must fit."""
        n = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else None

    def check_preset(self, preset: str | Preset) -> Preset:
        """The preset, loaded and checked against this model's depth: InputError (one line) when its
        layers do not fit, before any clip is decoded."""
        preset = _as_preset(preset)
        if not preset.is_identity:
            try:
                preset.resolve_layers(self.n_layers)
            except PresetError as exc:
                raise InputError(f"{exc}; model {self.name}") from None
        return preset

    def check_lengths(self, max_new_tokens: int, prompt_tokens: int = 0) -> None:
        """InputError when ``prompt_tokens + max_new_tokens`` exceeds the model's maximum positions."""
        limit = self.max_positions
        if limit is None or prompt_tokens + max_new_tokens <= limit:
            return
        if prompt_tokens == 0 or max_new_tokens >= limit:
            raise InputError(
                f"--max-new-tokens {max_new_tokens:,} does not fit the model's {limit:,} positions "
                f"(prompt included); give at most {max(limit - max(prompt_tokens, 1), 1):,}"
            )
        raise InputError(
            f"the prompt is {prompt_tokens:,} tokens (visual tokens included); with --max-new-tokens "
            f"{max_new_tokens:,} that exceeds the model's {limit:,} positions; shorten the question, use fewer "
            "frames or a lower --max-pixels, or lower --max-new-tokens"
        )

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
        """One question about one visual (with an optional system prompt): :meth:`prepare_chat` on
        ``[system?, user: [visual, question]]``."""
        check_text(question)  # bound the raw text before the tokenizer sees it
        check_text(system, "the system prompt")
        messages = []
        if system:
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        messages.append(
            {"role": "user", "content": [{"type": visual.kind}, {"type": "text", "text": question}]}
        )
        return self.prepare_chat(visual, messages, max_pixels=max_pixels, min_pixels=min_pixels)

    def prepare_chat(
        self,
        visual: Visual,
        messages: list[dict],
        *,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
    ) -> Prepared:
        """Like :meth:`prepare`, for a whole conversation about one visual (the server's multi-turn chat).

        ``messages``: Hugging Face chat format, ``[{"role": "system" | "user" | "assistant", "content":
        [{"type": "text", "text": ...} | {"type": "image" | "video"}, ...]}, ...]``, ending with a user
        turn; exactly one visual part in all, of ``visual.kind``, in a user turn. Rendered through the
        checkpoint's own chat template, so ``[system?, user: [visual, text]]`` gives exactly the inputs
        :meth:`prepare` gives. ``Prepared.question`` is the text of the last user turn.
        """
        check_frame_options(max_pixels=max_pixels, min_pixels=min_pixels)
        started = time.perf_counter()  # CPU work: never wait on the GPU here (batch prepares in a thread)
        for m in messages:
            for part in m.get("content", []):
                if part.get("type") == "text":
                    check_text(part.get("text"), "a message")  # bound raw text before tokenising
        if not messages or messages[-1].get("role") != "user":
            raise InputError("the conversation must end with a user message")
        placed = [
            (m.get("role"), part.get("type"))
            for m in messages
            for part in m.get("content", [])
            if part.get("type") in ("image", "video")
        ]
        if placed != [("user", visual.kind)]:
            raise InputError(f"the conversation must hold exactly one {visual.kind}, in a user message")
        question = " ".join(
            part["text"] for part in messages[-1]["content"] if part.get("type") == "text" and part.get("text")
        )
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        extra, warnings = self.adapter.processor_kwargs(
            self.processor, visual.kind, max_pixels=max_pixels, min_pixels=min_pixels, visual=visual
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
        stopping_criteria: list | None = None,
    ) -> AskResult:
        """Generate an answer for ``prepared``. ``seed`` seeds torch's generators first, so sampling
        (temperature > 0) is reproducible run to run; it is recorded in the result.
        ``stopping_criteria``: extra ``transformers`` ``StoppingCriteria`` checked after every
        generated token (the server's cancel flag and stop strings); the result then holds the
        tokens generated until one fired."""
        preset = self.check_preset(preset)
        check_method(method)
        check_generation_options(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        self.check_lengths(max_new_tokens, int(prepared.inputs["input_ids"].shape[1]))
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p if top_p is not None else 1.0, "top_k": 0}
            if temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        streamer = CallbackStreamer(self.processor.tokenizer, on_text) if on_text else None
        stopping = {}
        if stopping_criteria:
            from transformers import StoppingCriteriaList

            stopping["stopping_criteria"] = StoppingCriteriaList(stopping_criteria)
        timer = _ForwardTimer(self.model, self.adapter.vision_encoder, self._clock)
        if seed is not None:
            torch.manual_seed(seed)  # seeds CUDA / MPS generators too
        self._memory.reset()
        try:
            with attach(self.model, preset, method) as handle, timer:
                handle.bind(prepared.inputs)
                started = self._clock.now()
                output = self.model.generate(
                    **prepared.inputs, max_new_tokens=max_new_tokens, streamer=streamer, **sampling, **stopping
                )
                finished = self._clock.now()
            pruning_report = handle.report(prepared.inputs["input_ids"])
        except torch.cuda.OutOfMemoryError as exc:
            raise RuntimeFailure(
                "out of GPU memory during generation; try a stronger preset, fewer frames or lower --max-pixels"
            ) from exc
        except (PruningNotApplied, UnsupportedGeneration) as exc:
            raise RuntimeFailure(str(exc)) from exc
        warnings = [*getattr(prepared.visual, "warnings", []), *prepared.warnings]  # frame-count adjustments first
        why = method_class(method).shortfall_reason(handle.shape.layers)
        shortfall = ratio_warning(pruning_report, preset.ratio, why)
        if shortfall:
            warnings.append(shortfall)
        memory = self._memory.read()
        prompt_len = prepared.inputs["input_ids"].shape[1]
        generated = output[0, prompt_len:].tolist()
        answer = self.processor.tokenizer.decode(generated, skip_special_tokens=True).strip()
        ttft = timer.first_forward_end - started
        decode_s = finished - timer.first_forward_end
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
            warnings=warnings,
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
        preset = self.check_preset(preset)  # fail on a bad preset / method / length before decoding anything
        check_method(method)
        check_frame_options(fps=fps, frames=frames, max_frames=max_frames)
        check_generation_options(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        check_text(question)
        check_text(system, "the system prompt")
        self.check_lengths(max_new_tokens)
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


from .preset_table import PresetRow, preset_table  # noqa: E402 - re-exported: ``vitcop presets`` (no torch)


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
