"""What one pruned prefill did, as a :class:`~pruning.stats.PruningReport` (``PruningHandle.report``).

Contract: :func:`build_report` ``(handle, input_ids (1, S))``: visual tokens per stage, the cut layers,
layer-averaged visual tokens, each layer's tokens after the prefill (KV-cache length; for a
linear-attention layer the tokens it processed), LLM prefill FLOPs (real shapes, each layer by its kind,
and the paper's convention) pruned and unpruned, and the encoder patches (total / encoded). The last
prefill must be the prefill of ``input_ids`` (or of its prefix, followed by its question's tokens: a two-phase
run counts both phases, whether or not the prefix was kept from an earlier question): a non-identity method on a prompt with visual tokens and no
verified prefill of that prompt raises ``PruningNotApplied`` (a report of a run that was not pruned is
never made).
"""

from __future__ import annotations

import torch

from .flops import decoder_prefill_flops, paper_prefill_flops
from .stats import PruningReport
from .verify import fail

__all__ = ["build_report"]


def build_report(handle, input_ids: torch.Tensor) -> PruningReport:
    """Stage counts, layer-averaged visual tokens, measured cache lengths and prefill FLOPs of the
    last prefill, which must be the prefill of ``input_ids`` (1, S): a non-identity method on a prompt
    with visual tokens and no verified prefill of that prompt raises ``PruningNotApplied``."""
    L, s = handle.shape.layers, input_ids.shape[1]
    st = handle.last
    has_visual = bool(handle.adapter.visual_mask(input_ids).any())
    if not handle.method.is_identity and has_visual and (
        st is None or st.prompt_len + st.question_len != s or st.cache_lengths is None
    ):
        raise fail("no pruned prefill was recorded for this prompt: the engine's hooks did not see it")
    if st is None:  # nothing was pruned (identity preset or no visual tokens)
        n = handle.n_observed if handle.n_observed is not None else int(handle.adapter.visual_mask(input_ids).sum())
        seq, visual, stages = [s] * L, [n] * L, []
    else:
        n = st.n_visual
        seq = [length + st.question_len for length in st.cache_lengths]  # a kept prefix + the question's tokens
        visual = [st.layer_visual.get(layer, st.stages[0][1]) for layer in range(L)]
        stages = st.stages
    counts = [n] + [c for _, c in stages]
    counts += [counts[-1]] * (4 - len(counts))
    layers = [layer for layer, _ in stages[1:]] + [None, None]
    sh = handle.shape
    flops = lambda lens: decoder_prefill_flops(  # noqa: E731
        lens, hidden=sh.hidden, n_heads=sh.heads, n_kv_heads=sh.kv_heads, head_dim=sh.head_dim,
        intermediate=sh.intermediate, vocab=sh.vocab, layer_types=sh.types(), linear=sh.linear,
        query_gate=sh.query_gate,
    )
    paper = lambda lens: paper_prefill_flops(lens, hidden=sh.hidden, intermediate=sh.intermediate)  # noqa: E731
    pruned, full = flops(seq), flops([s] * L)
    layer_avg = sum(visual) / L
    return PruningReport(
        preset=handle.preset.label,
        method=handle.method.name,
        n_visual=counts[0],
        after_stage1=counts[1],
        after_stage2=counts[2],
        after_stage3=counts[3],
        shallow_layer=layers[0],
        deep_layer=layers[1],
        layer_averaged_visual=layer_avg,
        layer_averaged_ratio=layer_avg / n if n else 1.0,
        kv_cache_lengths=seq,
        prefill_flops=pruned,
        prefill_flops_unpruned=full,
        flops_ratio=pruned / full,
        prefill_flops_paper=paper(seq),
        prefill_flops_paper_unpruned=paper([s] * L),
        encoder_patches=None if handle.encoder_patches is None else list(handle.encoder_patches),
    )
