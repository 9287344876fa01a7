"""What any pruner that kept the same tokens would measure on this machine: the survivors-only prefill.

A pruned run's record (which prompt positions each decoder layer kept, and the values a merging cut wrote)
drives :class:`pruning.oracles.NeverPresent` with ``additive_mask=False``: the model's own decoder layers run
one by one on exactly those survivors, on the attention kernel's causal path (no mask, as a real unpadded
run), then the final norm and ``lm_head`` on the last position. No scoring, no selection, no hooks. With
``state=None`` every layer keeps every token: the unpruned counterpart.

``reference ratio = survivors-only prefill / all-tokens prefill`` is the speed-up the survivors themselves
allow on this hardware, so a benchmark's slack (measured prefill ratio / FLOPs ratio) splits exactly as

    slack = kernels x vitcop,  kernels = reference / FLOPs,  vitcop = measured / reference

*kernels*: how the hardware runs layers of fewer tokens, which FLOPs do not see (small matrix products
stream the same weights for less work); *vitcop*: what vitcop and the ``generate`` path add on top (pruning
work, hooks, position index, masks, set-up). Used by ``ttft_breakdown.py`` and ``gpu_suite.py``.
"""

from __future__ import annotations

import time

import torch

import pruning
from pruning.oracles import NeverPresent
from pruning.presets import load_preset

UNPRUNED = "none"


def pruned_record(session, inputs: dict, preset: str):
    """The engine's record of a one-token pruned generate (ViTCoP at ``preset``): what each layer kept."""
    with pruning.attach(session.model, load_preset(preset)) as handle:
        handle.bind(inputs)
        session.model.generate(**inputs, max_new_tokens=1, min_new_tokens=1, do_sample=False)
        return handle.last


class SurvivorReference:
    """Survivors-only prefills of one prepared prompt: ``UNPRUNED`` plus each of ``presets`` (which may name it).

    Built under the model's current attention implementation (eager is refused: it has no causal path
    without a mask). ``seconds(preset)`` times one prefill + first logits, CUDA-synchronised on a GPU."""

    def __init__(self, session, inputs: dict, presets):
        model, adapter = session.model, session.adapter
        self.device = session.device
        self.references = {
            p: NeverPresent(model, adapter, inputs, None if p == UNPRUNED else pruned_record(session, inputs, p),
                            additive_mask=False)
            for p in dict.fromkeys([UNPRUNED, *presets])
        }

    def presets(self) -> list[str]:
        return list(self.references)

    def seconds(self, preset: str) -> float:
        reference = self.references[preset]
        self._sync()
        start = time.perf_counter()
        with torch.inference_mode():
            reference.logits(reference.prefill(reference.new_cache()))
        self._sync()
        return time.perf_counter() - start

    def _sync(self) -> None:
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize(self.device)


def split_slack(measured: float, reference: float, flops: float) -> dict:
    """{reference_ratio, kernel_slack, vitcop_slack} from the three ratios of one preset against none."""
    return {"reference_ratio": reference, "kernel_slack": reference / flops, "vitcop_slack": measured / reference}
