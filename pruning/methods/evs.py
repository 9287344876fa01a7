"""``evs``: Efficient Video Sampling (arXiv 2510.14624), the video pruning of vLLM / SGLang, as a method.

Policy only; the math is :func:`pruning.evs.evs_select`. Before the LLM, per video of the prompt
(layout from the adapter's ``video_token_grids``: t temporal patches of h x w LLM tokens), keep the
max(h*w, floor(t*h*w * (1 - q))) tokens whose projected embedding (``inputs_embeds``) changed most
since the same spatial position in the previous temporal patch; the first patch is kept whole.
The preset's layer-averaged ratio r maps to q = 1 - r (pruning before the LLM, every layer sees
the kept tokens). Image tokens are never pruned, so an image prompt runs unchanged.
"""

from __future__ import annotations

import torch

from ..evs import evs_retained_count, evs_select
from .base import EntryContext, Method


class EVSMethod(Method):
    name = "evs"
    description = "EVS (vLLM/SGLang): keep video tokens that changed most since the previous temporal patch"

    planned: int | None = None

    @classmethod
    def shortfall_reason(cls, n_layers: int) -> str:
        return "EVS keeps every video's first temporal patch whole, so it cannot go below 1 / temporal patches"

    def planned_stages(self) -> list[int]:
        """[visual tokens entering the LLM]: the image tokens plus each video's retained count."""
        return [self.planned]

    def enter(self, ctx: EntryContext) -> torch.Tensor:
        positions = ctx.visual_positions
        keep = torch.ones(positions.numel(), dtype=torch.bool, device=positions.device)
        grids = self.adapter.video_token_grids(ctx.input_ids, ctx.extras)
        ids = ctx.input_ids[0, positions.to(ctx.input_ids.device)]
        video = (ids == self.adapter.visual_token_ids()["video"]).nonzero().flatten().to(positions.device)
        sizes = [t * h * w for t, h, w in grids]
        if sum(sizes) != video.numel():
            raise RuntimeError(f"video token layout {grids} does not cover the prompt's {video.numel()} video tokens")
        q = 1.0 - self.preset.ratio
        self.planned = positions.numel() - video.numel() + sum(evs_retained_count(h * w, t, q) for t, h, w in grids)
        embeds = ctx.inputs_embeds[0]
        for (_, h, w), part in zip(grids, torch.split(video, sizes)):
            chosen = evs_select(embeds[positions[part].to(embeds.device)], h * w, q).to(positions.device)
            keep[part] = False
            keep[part[chosen]] = True
        return keep.nonzero().flatten()
