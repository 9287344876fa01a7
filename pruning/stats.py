"""What a pruning run reports (a plain dataclass; ``ask --json`` embeds it verbatim)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PruningReport:
    preset: str
    method: str
    n_visual: int  # N: prunable visual tokens entering Stage I
    after_stage1: int  # V
    after_stage2: int  # Rs
    after_stage3: int  # Rd
    shallow_layer: int | None
    deep_layer: int | None
    layer_averaged_visual: float  # sum over layers of visual tokens processed / L
    layer_averaged_ratio: float  # layer_averaged_visual / N
    kv_cache_lengths: list[int]  # per decoder layer, right after prefill
    prefill_flops: float
    prefill_flops_unpruned: float
    flops_ratio: float  # pruned / unpruned
