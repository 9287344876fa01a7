"""``vitcop doctor``: is this installation able to prune correctly? Versions, devices, and self-tests.

Contract. :func:`run` returns a :class:`DoctorReport`: the versions of vitcop, Python, torch,
torchvision, transformers and decord; the devices (CUDA / bf16 / MPS availability, flash-attn
importable); whether transformers is inside the tested range (``pruning.compat.TESTED_RANGE``); and one
:class:`Check` per (family, attention implementation, self-test) on a tiny random-weight model of every
supported family built in a temporary folder, on a synthetic clip (no network, no file from the source
tree, so it works from a wheel install too):

- ``identity``: preset ``none`` gives bit-identical last-token logits and greedy tokens to the
  unmodified model;
- ``drop==mask``: dropping visual tokens at the deep layer equals an unpruned run that masks those
  keys from that layer on (logits within 1e-4 on float32, same greedy tokens);
- ``kv-cache``: after a ``1_9`` prefill every layer's KV cache holds exactly the budget
  (non-visual + V / Rs / Rd);
- ``runtime-check``: the run-time check fires on a sabotaged hook (layer 0's hooks removed).

Before any self-test, every runtime package (torch, transformers and the transformers classes vitcop
loads models with, decord) is imported (:func:`vitcop_cli.environment.import_problems`); one that
does not import is a ``problems`` entry (a FAIL line), versions then come from package metadata, and
no self-test runs. ``demo_models`` lists the built-in demo models (``--model tiny:<family>``) and
whether each is cached (:func:`vitcop_cli.models.demo_models.listing`).

``passed`` is True when there is no problem, every check passed and transformers is in the tested
range. On ``cuda`` the checks run under SDPA and, when flash-attn is importable, under flash_attention_2 (bfloat16 there, so
drop==mask uses a bfloat16 tolerance).
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from ..models.devmodels import FAMILIES

#: the self-tests' input: a synthetic 4-frame clip (no file, so doctor works from any install)
CLIP_FRAMES, CLIP_SIZE = 4, (224, 160)


@dataclass
class Check:
    family: str
    attn: str
    name: str
    passed: bool
    detail: str
    seconds: float


@dataclass
class DoctorReport:
    versions: dict[str, str | None]
    devices: dict[str, object]
    transformers_in_tested_range: bool
    tested_range: str
    checks: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # runtime packages that do not import
    demo_models: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and self.transformers_in_tested_range and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {"schema": "vitcop.doctor/1", "passed": self.passed, **asdict(self)}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> tuple[dict, dict]:
    """(versions, devices) of this installation; without a working torch, versions from metadata
    and no device."""
    from .. import __version__

    versions = {
        "vitcop": __version__, "python": platform.python_version(), "torch": _version("torch"),
        "torchvision": _version("torchvision"), "transformers": _version("transformers"), "decord": _version("decord"),
    }
    try:
        import torch

        from ..session.runtime import flash_attn_installed
    except Exception:  # noqa: BLE001 - reported by import_problems
        return versions, {"cuda": False, "cuda_devices": [], "bf16": False, "mps": False, "flash_attn": False}
    versions["torch"] = torch.__version__
    cuda = torch.cuda.is_available()
    devices = {
        "cuda": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "flash_attn": flash_attn_installed(),
    }
    return versions, devices


def inspect() -> DoctorReport:
    """The environment part of the report (no checks run yet)."""
    from pruning import compat

    from ..environment import import_problems
    from ..models.demo_models import listing

    problems = import_problems()
    versions, devices = environment()
    if "transformers" in problems:  # judged by the installed release's metadata, without importing it
        in_range = versions["transformers"] is not None and compat.in_tested_range(versions["transformers"])
    else:
        in_range = compat.in_tested_range()
    return DoctorReport(versions, devices, in_range, compat.tested_range_text(), problems=list(problems.values()),
                        demo_models=listing())


def run(device: str = "cpu", families: tuple[str, ...] = FAMILIES, on_check=None,
        report: DoctorReport | None = None) -> DoctorReport:
    """Run every self-test into ``report`` (default: a fresh :func:`inspect`); ``on_check(Check)`` is
    called as each finishes. None runs when a runtime package does not import (``report.problems``)."""
    report = report or inspect()
    if report.problems:
        return report
    from .. import api

    attns = ["sdpa"] + (["flash_attention_2"] if device.startswith("cuda") and report.devices["flash_attn"] else [])
    api.quiet_library_logs()
    with tempfile.TemporaryDirectory(prefix="vitcop-doctor-") as tmp:
        for family in families:
            folder = _tiny_model(family, Path(tmp))
            for attn in attns:
                session = api.load(str(folder), device=device, attn=attn, offline=True,
                                   dtype="bfloat16" if attn == "flash_attention_2" else "float32")
                for check in _self_tests(session, family, attn):
                    report.checks.append(check)
                    if on_check:
                        on_check(check)
    return report


def _tiny_model(family: str, base: Path) -> Path:
    from ..models.devmodels import make_model

    return make_model(family, base / family, size="tiny")


def _self_tests(session, family: str, attn: str):
    from ..media.synthetic import synthetic_clip

    prepared = session.prepare(synthetic_clip(CLIP_FRAMES, *CLIP_SIZE), "What happens in the video?")
    for name, test in (("identity", _identity), ("drop==mask", _drop_equals_mask),
                       ("kv-cache", _kv_cache), ("runtime-check", _runtime_check)):
        started = time.perf_counter()
        try:
            ok, detail = test(session, prepared.inputs)
        except Exception as exc:  # noqa: BLE001 - a self-test reports, never crashes the doctor
            ok, detail = False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        yield Check(family, attn, name, ok, detail, time.perf_counter() - started)


def _greedy(model, inputs, new_tokens: int = 4):
    import torch

    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    return out.sequences[0, inputs["input_ids"].shape[1]:], torch.stack(out.logits)


def _identity(session, inputs):
    import torch

    import pruning

    ref_tokens, ref_logits = _greedy(session.model, inputs)
    with pruning.attach(session.model, "none"):
        tokens, logits = _greedy(session.model, inputs)
    same = torch.equal(tokens, ref_tokens) and torch.equal(logits, ref_logits)
    return same, "bit-identical logits, tokens" if same else "differs from the unmodified model"


def _drop_equals_mask(session, inputs):
    """Dropping at the deep layer equals masking those keys from there on; on a hybrid model (linear-attention
    layers, where a key mask means nothing) equals a reference run on the survivors alone (never present)."""
    import torch

    import pruning
    from pruning.oracles import KeyMask, NeverPresent, dropped_before
    from pruning.presets import Preset

    deep_only = Preset(name="deep-only", ratio=1.0, vision_keep=1.0, cluster_fraction=0.18, deep_divisor=5.0)
    with pruning.attach(session.model, deep_only) as handle:
        handle.bind(inputs)
        tokens, logits = _greedy(session.model, inputs)
        state = handle.last
        deep = max(handle.method.prune_layers)
    if "linear_attention" in session.adapter.lm_shape().types():
        ref_tokens, ref_logits = NeverPresent(session.model, session.adapter, inputs, state).run(tokens.numel())
        logits = logits[:, 0]
    else:
        with KeyMask(session.model, session.adapter, dropped_before(session.adapter, inputs["input_ids"], state, deep),
                     deep):
            ref_tokens, ref_logits = _greedy(session.model, inputs)
    diff = float((logits.float() - ref_logits.float()).abs().max())
    tol = 1e-4 if session.dtype == torch.float32 else 5e-2
    ok = torch.equal(tokens, ref_tokens) and diff <= tol
    same = "same tokens" if torch.equal(tokens, ref_tokens) else "tokens differ"
    against = "never-present reference: " if "linear_attention" in session.adapter.lm_shape().types() else ""
    return ok, f"{against}diff {diff:.1e} {'<=' if diff <= tol else '>'} {tol:g}, {same}"


def _kv_cache(session, inputs):
    import torch

    import pruning
    from pruning import compat
    from pruning.presets import load_preset

    preset = load_preset("1_9")
    with pruning.attach(session.model, preset) as handle, torch.inference_mode():
        handle.bind(inputs)
        cache = compat.output_cache(session.model(**inputs, use_cache=True))
        state = handle.last
    shape = handle.shape
    b = preset.budgets(state.n_visual, shape.layers, n_after_stage1=state.stages[0][1],
                       layer_types=shape.layer_types or None)
    non_visual = state.kept_orig.numel() - b.V
    expected = [non_visual + n for n in b.per_layer()]
    # a linear-attention layer caches no tokens: the tokens its mixer processed stand in
    got = [compat.cache_length(cache, layer) if shape.has_keys(layer) else state.mixed.get(layer)
           for layer in range(shape.layers)]
    if got == expected:
        return True, f"{len(got)} layers = budget ({got[0]}..{got[-1]})"
    return False, f"lengths {got}, budget {expected}"


def _runtime_check(session, inputs):
    import pruning
    from pruning.verify import PruningNotApplied

    with pruning.attach(session.model, "1_9") as handle:
        handle.bind(inputs)
        layer0 = session.adapter.decoder_layers[0]._forward_pre_hooks
        for hook in handle._hooks:
            if hook.id in layer0:
                hook.remove()  # sabotage: layer 0's hooks never fire
        try:
            _greedy(session.model, inputs, new_tokens=1)
        except PruningNotApplied as exc:
            return True, "fired (" + str(exc).split("(", 1)[1].split(")", 1)[0][:28] + "...)"
    return False, "a sabotaged hook went unnoticed"
