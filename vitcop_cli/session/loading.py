"""Loading: ``load(model) -> Session`` once, how results name a model, and what a failed load says.

Contract:

- :func:`load` resolves device / dtype / attention, then what ``model`` names: a built-in demo
  model (``tiny:<family>`` / ``bench:<family>``, :mod:`vitcop_cli.models.demo_models`: built into the
  cache on first use, then loaded from there, always offline), a local folder or a hub id. It reads
  the checkpoint's ``config.json`` alone first (:func:`vitcop_cli.models.model_ref.declared_config`: an
  unsupported ``model_type``, a missing folder, an uncached hub id offline fail before any weight is
  read), then loads config, processor and weights with transformers' ``from_pretrained``
  (``trust_remote_code=False`` always, so no code shipped with a checkpoint ever runs;
  ``local_files_only`` when offline).
- Failures are one line. A checkpoint transformers cannot read is an :class:`InputError` (exit 2)
  naming the model; a failure that comes from the environment (transformers cannot import one of
  its own modules or dependencies, or asks for a package to be installed:
  :func:`vitcop_cli.environment.is_environment_error`) is an
  :class:`~vitcop_cli.errors.EnvironmentProblem` (exit 1) naming transformers and its version,
  never blamed on the checkpoint; running out of GPU memory is a :class:`RuntimeFailure`.
- :func:`model_identity`: how results, resume keys and labels name a model.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from pruning.adapters import UnsupportedModelError, adapter_class

from ..defaults import DEFAULT_MODEL
from ..environment import importing, is_environment_error, problem
from ..errors import InputError, RuntimeFailure, VitcopError
from ..models import demo_models
from .runtime import Clock, resolve_attn, resolve_device, resolve_dtype
from .session import Session

__all__ = ["load", "model_identity", "quiet_library_logs"]


def load(
    model: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    dtype: str = "auto",
    attn: str = "auto",
    offline: bool = False,
) -> Session:
    """Load a supported checkpoint (Hugging Face id, local folder or built-in demo model) once.

    Order (each step fails with one line before the next starts): device / dtype / attention;
    a demo model's build (first use only); the checkpoint's ``config.json`` alone
    (:func:`vitcop_cli.models.model_ref.declared_config`: a path-like ``model`` that does not exist, a hub
    id offline and not cached, no network: fast InputErrors); its declared ``model_type`` against
    the adapter registry; only then transformers' ``from_pretrained`` for config, processor and
    weights, every one with ``trust_remote_code=False``, so no code shipped with a checkpoint ever
    runs and transformers never asks whether it may.
    """
    from ..models.model_ref import check_model_type, declared_config, is_path_like

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    attn_impl = resolve_attn(attn, dev)
    started = time.perf_counter()
    demo = demo_models.parse(model)
    if demo is not None:
        model = demo.name
        folder = demo_models.ensure(demo)  # built into the cache on first use
        source, offline = str(folder), True
        declared, _ = declared_config(source, offline=True)
    else:
        declared, offline = declared_config(model, offline=offline)  # config.json only: no code, no weights
        source = str(Path(model).expanduser()) if is_path_like(model) else model
    model_type = check_model_type(model, declared)
    try:
        adapter_cls = adapter_class(model_type)
    except UnsupportedModelError as exc:
        raise InputError(f"{model}: {exc}") from None
    with importing("transformers"):
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

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
    except VitcopError:
        raise
    except torch.cuda.OutOfMemoryError as exc:
        raise RuntimeFailure(f"{model}: out of GPU memory while loading; try a smaller model or --dtype float16") from exc
    except Exception as exc:
        if is_environment_error(exc):
            raise problem("transformers", exc, doing=f"loading {model}") from exc
        if not isinstance(exc, (OSError, ValueError)):
            raise
        if demo is not None:
            raise InputError(
                f"the demo model {model} built in {source} does not load ({_first_line(exc)}); remove that folder "
                "to rebuild it"
            ) from exc
        raise InputError(_load_error(model, offline, exc)) from exc
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
        demo_model=demo is not None,
    )


def model_identity(model: str) -> str:
    """How results, resume keys and labels name a model: a built-in demo model by its demo name
    (``tiny:qwen2_vl``), a local folder by its resolved absolute path (so ``./m``, ``m/`` and
    ``/abs/m`` are one model), a hub id exactly as given."""
    try:
        demo = demo_models.parse(model)
    except InputError:
        demo = None
    if demo is not None:
        return demo.name
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def quiet_library_logs(debug: bool = False) -> None:
    """Silence transformers' info/warning chatter and progress bars (kept with ``debug``)."""
    with importing("transformers"):
        from transformers.utils import logging as hf_logging

    if not debug:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _load_error(model: str, offline: bool, exc: Exception) -> str:
    first = _first_line(exc)
    if offline and not Path(model).exists():
        return (
            f"model {model!r} is not (completely) in the local Hugging Face cache and offline mode forbids "
            "downloading; run once online, or pass a local folder"
        )
    if Path(model).exists():
        return f"{model}: not a loadable checkpoint folder ({first})"
    return f"could not load model {model!r}: {first} (check the id, your network, or use a local folder)"
