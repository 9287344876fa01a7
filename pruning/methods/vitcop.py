"""ViTCoP (docs VITCOP.md) as a method of the shared engine: policy only, math from the pure modules.

- enter (Stage I): pseudo-CLS / [CLS] saliency captured by the adapter's encoder hooks; per frame keep
  the top ``max(1, floor(v * n_frame))``; cluster the kept tokens of each frame with VIC (labels of
  different frames never mix; each frame's -1 tokens form one group). Budgets (V, Rs, Rd) follow from
  the real V via ``preset.budgets(N, L, n_after_stage1=V)``.
- layer Ls (Stage II): key norms of layer Ls-1 -> :func:`cluster_select` with budget Rs ->
  :func:`merge_values` (rule from the preset). Skipped when Rs >= current visual tokens, since a
  plan with R = V would still "merge" singleton remainders (value 2h under the reference rule).
- layer Ld (Stage III): key norms of layer Ld-1 -> keep the Rd smallest. Skipped when Rd >= current.
"""

from __future__ import annotations

import torch

from ..saliency import key_norm
from ..select import cluster_select, frame_group_ids, merge_values, per_frame_topk, smallest_k
from ..vic import cluster_frames
from .base import EntryContext, LayerChoice, LayerContext, Method


class VitcopMethod(Method):
    name = "vitcop"
    description = "ViTCoP: encoder saliency filter, cluster-aware key-norm merging at Ls, key-norm cut at Ld"
    needs_encoder_capture = True

    def __init__(self, preset, adapter, shape):
        super().__init__(preset, adapter, shape)
        self.shallow, self.deep = preset.resolve_layers(shape.layers, shape.layer_types or None)
        self.prune_layers = (self.shallow, self.deep)
        self.key_layers = (self.shallow - 1, self.deep - 1)
        self.budget = None
        self.groups: torch.Tensor | None = None

    @property
    def is_identity(self) -> bool:
        return self.preset.is_identity

    def enter(self, ctx: EntryContext) -> torch.Tensor:
        vt = self.adapter.visual_tokens(ctx.input_ids, ctx.records, ctx.extras)
        if not torch.equal(vt.positions_in_seq, ctx.visual_positions.to(vt.positions_in_seq.device)):
            raise RuntimeError("encoder captures do not line up with the prompt's visual tokens")
        n = vt.positions_in_seq.numel()
        p = self.preset
        if p.vision_keep < 1:
            kept = per_frame_topk(vt.saliency, vt.frame_ids, p.vision_keep)
        else:
            kept = torch.arange(n, device=vt.saliency.device)
        self.budget = p.budgets(n, self.shape.layers, n_after_stage1=kept.numel(), layer_types=self.shape.layer_types or None)
        self.groups = None
        if self.budget.Rs < kept.numel():
            frames = vt.frame_ids[kept]
            labels = self._vic(vt.features[kept], vt.grid_positions[kept], frames)
            self.groups = frame_group_ids(labels, frames)
        return kept

    def planned_stages(self) -> list[int]:
        """[V, Rs, Rd], where a stage whose budget is not below the current count keeps all."""
        b = self.budget
        after_shallow = b.Rs if b.Rs < b.V else b.V
        return [b.V, after_shallow, b.Rd if b.Rd < after_shallow else after_shallow]

    def _vic(self, features, positions, frame_ids) -> torch.Tensor:
        """VIC per frame; labels are local to each frame (``frame_group_ids`` makes them global). Frames of
        equal token count are clustered in one batch (:func:`pruning.vic.cluster_frames`)."""
        p = self.preset
        return cluster_frames(features, positions, frame_ids, dc=p.dc, center_fraction=p.cluster_fraction,
                              radius=p.radius)

    def at_layer(self, layer: int, ctx: LayerContext) -> LayerChoice | None:
        n_visual = int(ctx.visual.sum())
        if layer == self.shallow and self.budget.Rs < n_visual:
            t = key_norm(self.visual_keys(ctx, layer - 1, self.shape.kv_heads))
            plan = cluster_select(self.groups.to(t.device), t, self.budget.Rs)
            vis = ctx.visual.nonzero().flatten().to(ctx.hidden.device)
            keep, values = merge_values(ctx.hidden[0, vis], plan, rule=self.preset.merge)
            return LayerChoice(keep=keep, values=values)
        if layer == self.deep and self.budget.Rd < n_visual:
            t = key_norm(self.visual_keys(ctx, layer - 1, self.shape.kv_heads))
            return LayerChoice(keep=smallest_k(t, self.budget.Rd))
        return None
