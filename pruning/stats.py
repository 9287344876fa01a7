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
    prefill_flops_paper: float = 0.0  # the paper's convention: sum_l 4nd^2 + 2n^2d + 3ndm (multiply-adds)
    prefill_flops_paper_unpruned: float = 0.0
    # [total, encoded] temporal patches (LLaVA-OneVision: frames / crops) of the prefill's encoder calls: each
    # distinct one is encoded once (pruning.encoder_reuse); None when reuse did not run (identity, text only)
    encoder_patches: list[int] | None = None


#: relative gap between requested and achieved layer-averaged ratio above which a run is flagged
RATIO_TOLERANCE = 0.05


def ratio_warning(report: PruningReport, requested: float, why: str) -> str | None:
    """A one-line warning when the achieved layer-averaged ratio misses ``requested`` by more than 5%
    (a budget clamped on a shallow model, or a method that cannot reach the ratio); else None.
    ``why`` is the method's own reason (:meth:`pruning.methods.Method.shortfall_reason`)."""
    if report.n_visual == 0 or requested >= 1:
        return None
    achieved = report.layer_averaged_ratio
    if abs(achieved - requested) <= RATIO_TOLERANCE * requested:
        return None
    return (
        f"{report.method} reached layer-averaged ratio {achieved:.3f}, not the preset's {requested:.3f} "
        f"({why}, N = {report.n_visual}); "
        "FLOPs and speed-ups are for the achieved ratio"
    )
