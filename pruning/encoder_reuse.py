"""Encode each distinct temporal patch once: removable hooks on one model instance's vision encoder.

Why it is exact. Every supported encoder confines attention to one temporal patch — Qwen2-VL /
Qwen2.5-VL / Qwen3-VL / Qwen3.5: one ``cu_seqlens`` segment per temporal patch (2 video frames) or
image, Qwen2.5-VL's windows lie inside one; LLaVA-OneVision: SigLIP per frame / image crop — and its
position information depends on the patch's grid (h, w) only (Qwen rotary and Qwen3-VL's interpolated
position embeddings repeat over t). So a temporal patch whose pixels equal an earlier one's (static
screens, slides, a still camera) has an identical encoder output. Each encoder call is rewritten to
its distinct patches — bitwise pixel equality after preprocessing plus the same (h, w), decided by
:func:`pruning.repeats.find_repeats`, never a threshold — and every output field is spread back to the
full call (:meth:`pruning.repeats.RepeatPlan.expand`), so the model, the Stage-I scores, VIC and the
positions see exactly what the unmodified encoder gives.

Bit-identity (checked by ``tests/test_encoder_reuse.py``): on CPU (float32, sdpa and eager, 1 and 2
threads) every family's encoder outputs, Stage-I records, kept tokens and greedy logits are bit-identical
with and without reuse. The only way a result can differ is a kernel whose arithmetic depends on how
many rows share a call (on CUDA, cuBLAS may pick another GEMM algorithm for another row count): then
outputs agree to float rounding, not bit for bit.

A call is encoded whole (and counted as such) when it carries other tensor inputs than its pixels and
grid — precomputed geometry sized for the full call — or asks for attention maps
(:func:`pruning.compat.other_tensor_inputs`).

Contract:
- ``attach(model) -> EncoderReuse`` (removable, a context manager); the pruning engine attaches one for
  every non-identity method (``PruningHandle``, before its Stage-I capture hooks, which expand their
  records through :meth:`EncoderReuse.expand`); identity presets attach none.
- ``EncoderReuse.encoder_patches``: ``(total, encoded)`` temporal patches (Qwen: temporal patches /
  images; LLaVA-OneVision: frames / image crops) summed over the encoder calls of the last prefill, or
  None when the last prefill ran no encoder (text only). ``PruningHandle.encoder_patches`` reads it.
- Adapters provide the plumbing: ``FamilyAdapter.encoder_reuse_hooks(reuse, timed)`` registers a
  forward pre-hook on the encoder that calls :meth:`EncoderReuse.begin` and shrinks the call, and a
  forward hook that returns :meth:`EncoderReuse.finish` (the spread-back output). ``timed`` wraps both,
  so the detection and the spreading count as pruning overhead.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from . import compat
from .repeats import RepeatPlan, find_repeats

__all__ = ["EncoderReuse", "ReuseCall", "attach"]


@dataclass
class ReuseCall:
    """One encoder call in flight: its plan, the call as the model made it, and why it was not shrunk
    (``declined``: the other tensor inputs it carried; empty when it was shrunk or had no repeats)."""

    plan: RepeatPlan
    args: tuple
    kwargs: dict
    declined: list[str]
    scales: tuple = (1,)  # rows an output may have per input row (see RepeatPlan.expand)

    @property
    def shrunk(self) -> bool:
        return self.plan.has_repeats and not self.declined


class EncoderReuse:
    """Encoder-reuse hooks of one model instance (see the module docstring)."""

    def __init__(self, model, *, adapter=None, timed=lambda fn: fn):
        from .adapters import adapter_for

        self.model = model
        self.adapter = adapter if adapter is not None else adapter_for(model)
        #: the encoder call in flight (set by the encoder's pre-hook, cleared by its forward hook)
        self.active: ReuseCall | None = None
        #: (total, encoded) temporal patches of the last prefill's encoder calls; None: no encoder call
        self.encoder_patches: tuple[int, int] | None = None
        self._calls: list[tuple[int, int]] = []  # (total, encoded) per encoder call since the last prefill
        shape = self.adapter.lm_shape()
        self._ref_layer = next(i for i in range(shape.layers) if shape.has_keys(i))
        self._hooks = list(self.adapter.encoder_reuse_hooks(self, timed=timed))
        self._hooks.append(
            self.adapter.language_model.register_forward_pre_hook(self._on_language_model, with_kwargs=True)
        )

    # ---- lifecycle -----------------------------------------------------------------------
    @property
    def hooks(self) -> list:
        return self._hooks

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self.active = None

    def __enter__(self) -> "EncoderReuse":
        return self

    def __exit__(self, *exc) -> bool:
        self.remove()
        return False

    # ---- called by the adapters' encoder hooks -------------------------------------------------
    def begin(
        self, rows: torch.Tensor, sizes: Sequence[int], keys: Sequence[Hashable] | None, args: tuple, kwargs: dict,
        declined: list[str] | None = None, scales: Sequence = (1,),
    ) -> ReuseCall:
        """At an encoder call's entry: find the repeats among the groups of ``rows`` (see
        :func:`pruning.repeats.find_repeats`) and count the call. ``declined``: reasons not to shrink it
        (it is then encoded whole and counted as ``encoded == total``). ``scales``: the rows the call's
        outputs may have per input row (e.g. 1 and 1/4 for patch rows and 2x2-merged tokens); an output of
        any other length is refused. The adapter shrinks the call when the returned call's ``shrunk`` is
        true."""
        if declined:
            plan = RepeatPlan(sizes=tuple(sizes), source=tuple(range(len(sizes))), encoded=tuple(range(len(sizes))))
        else:
            plan = find_repeats(rows, sizes, keys)
        self.active = ReuseCall(plan, args, dict(kwargs), list(declined or []), tuple(scales))
        self._calls.append((plan.total, plan.n_encoded if self.active.shrunk else plan.total))
        return self.active

    def expand(self, x: torch.Tensor, what: str = "a Stage-I record") -> torch.Tensor:
        """During a shrunk encoder call: ``x`` computed on the distinct patches -> for every patch of the
        call (rows per patch, merged token or frame). Outside one, or without repeats: ``x`` itself."""
        call = self.active
        return call.plan.expand(x, what, call.scales) if call is not None and call.shrunk else x

    def original_call(self) -> tuple[tuple, dict] | None:
        """(args, kwargs) of the encoder call in flight as the model made it (before shrinking), or None."""
        return None if self.active is None else (self.active.args, self.active.kwargs)

    def finish(self, output):
        """At an encoder call's exit: its output with every tensor field spread back to the full call (None when
        the call was not shrunk: the output stands)."""
        call, self.active = self.active, None
        if call is None or not call.shrunk:
            return None
        try:
            return _expand_output(output, call, "the encoder output")
        except ValueError as exc:
            raise RuntimeError(f"encoder reuse cannot rebuild the full output: {exc}; {compat.version_note()}") from None

    # ---- prefill bookkeeping -------------------------------------------------------------
    def _on_language_model(self, _module, _args, kwargs):
        """The language model's first call after encoder calls closes the prompt's count."""
        calls, self._calls = self._calls, []
        if calls:
            self.encoder_patches = (sum(t for t, _ in calls), sum(e for _, e in calls))
        elif compat.cache_length(compat.find_cache(kwargs), self._ref_layer) == 0:
            self.encoder_patches = None  # a prefill without an encoder call (text only)


def _expand_output(value, call: ReuseCall, name: str):
    """Every tensor inside an encoder output (ModelOutput / dict / tuple / list, nested) spread back."""
    if isinstance(value, torch.Tensor):
        return call.plan.expand(value, name, call.scales)
    if isinstance(value, dict):  # transformers' ModelOutput is an OrderedDict of its non-None fields
        for key in list(value.keys()):
            value[key] = _expand_output(value[key], call, f"{name}.{key}")
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_expand_output(v, call, f"{name}[{i}]") for i, v in enumerate(value))
    return value


def attach(model) -> EncoderReuse:
    """Encode each distinct temporal patch of ``model``'s vision encoder once (removable). The pruning
    engine does this itself for every non-identity method; use it directly for an unpruned run."""
    return EncoderReuse(model)
