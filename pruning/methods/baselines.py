"""Baseline methods for honest comparison, at the same layer-averaged ratio as the preset.

- ``uniform``: before the LLM, keep R = round(r * N) evenly spaced visual tokens (a sanity floor).
- ``divprune``: before the LLM, keep R = round(r * N) tokens forming a max-min diverse subset of the
  projected visual features (greedy farthest point on cosine distance; DivPrune, CVPR 2025).
- ``fastv``: at layer K (default 2; the preset's ``shallow_layer``; on a hybrid model snapped like
  ViTCoP's cuts until K-1 is a full-attention layer), keep the R visual tokens that
  receive the most attention from the last prompt token at layer K-1, with
  K*N + (L-K)*R = L*r*N. Only that one query row is computed, from layer K-1's q/k projections
  rotated with the rotary embeddings that layer received — no attention weights are requested, so
  it runs under SDPA / FlashAttention too (FastV, ECCV 2024). Its choice reads the question (the last prompt
  token), so it keeps no reusable prefix: every FastV answer is one single-pass prefill.
"""

from __future__ import annotations

import torch

from ..baselines import evenly_spaced, last_query_attention, max_min_diverse, single_cut_budget
from ..budget import snap_cut_layer
from .base import EntryContext, LayerChoice, LayerContext, Method


class _BeforeLLM(Method):
    """Prune once, at the LLM's entry, to R = round(r * N) visual tokens."""

    planned: int | None = None

    def enter(self, ctx: EntryContext) -> torch.Tensor:
        n = ctx.visual_positions.numel()
        r = single_cut_budget(n, self.shape.layers, self.preset.ratio, cut_layer=0)
        self.planned = min(r, n)
        return self.choose(ctx, r) if r < n else torch.arange(n, device=ctx.visual_positions.device)

    def planned_stages(self) -> list[int]:
        return [self.planned]

    def choose(self, ctx: EntryContext, r: int) -> torch.Tensor:
        raise NotImplementedError


class UniformMethod(_BeforeLLM):
    name = "uniform"
    description = "keep evenly spaced visual tokens before the LLM (sanity floor)"

    def choose(self, ctx, r):
        return evenly_spaced(ctx.visual_positions.numel(), r).to(ctx.visual_positions.device)


class DivPruneMethod(_BeforeLLM):
    name = "divprune"
    description = "keep a max-min diverse subset of projected visual features before the LLM"

    def choose(self, ctx, r):
        features = ctx.inputs_embeds[0, ctx.visual_positions.to(ctx.inputs_embeds.device)]
        return max_min_diverse(features, r).to(ctx.visual_positions.device)


class FastVMethod(Method):
    name = "fastv"
    description = "at layer K keep the visual tokens the last prompt token attends to most at layer K-1"
    question_independent = False  # the last prompt token is the question's: no prefix is kept

    def __init__(self, preset, adapter, shape):
        super().__init__(preset, adapter, shape)
        self.k = preset.shallow_layer
        if not 0 < self.k < shape.layers:
            raise ValueError(f"fastv needs 0 < K < {shape.layers} (the preset's shallow_layer), got {self.k}")
        has_keys = [shape.has_keys(layer) for layer in range(shape.layers)]
        if not has_keys[self.k - 1]:  # a hybrid model: K-1 must be softmax attention (its q / k are read)
            snapped = snap_cut_layer(self.k, has_keys, 1, shape.layers - 1)
            if snapped is None:
                raise ValueError("fastv needs a full-attention layer before its cut layer K; this model has none")
            self.k = snapped
        self.prune_layers = (self.k,)
        self.key_layers = self.query_layers = (self.k - 1,)
        self.budget = None

    def enter(self, ctx: EntryContext) -> torch.Tensor:
        n = ctx.visual_positions.numel()
        self.budget = single_cut_budget(n, self.shape.layers, self.preset.ratio, cut_layer=self.k)
        self.n_entered = n
        return torch.arange(n, device=ctx.visual_positions.device)

    def planned_stages(self) -> list[int]:
        return [self.n_entered, min(self.budget, self.n_entered)]

    def at_layer(self, layer: int, ctx: LayerContext) -> LayerChoice | None:
        n_visual = int(ctx.visual.sum())
        if self.budget >= n_visual:
            return None
        src = self.k - 1
        heads, kv_heads = self.shape.heads, self.shape.kv_heads
        q = ctx.queries[src][0, -1].reshape(heads, -1)  # the last prompt token's query, (H, d)
        k = ctx.keys[src][0].reshape(-1, kv_heads, q.shape[-1])  # (S, H_kv, d)
        cos, sin = ctx.rope[src]
        q = self.adapter.apply_rope(q[None, :, None], cos[:, -1:], sin[:, -1:])[0, :, 0]  # (H, d)
        k = self.adapter.apply_rope(k.transpose(0, 1)[None], cos, sin)[0]  # (H_kv, S, d)
        scores = last_query_attention(q, k)
        vis = ctx.visual.nonzero().flatten().to(scores.device)
        order = torch.sort(scores[vis], descending=True, stable=True).indices  # ties: lower index
        return LayerChoice(keep=torch.sort(order[: self.budget]).values)
