"""The tokens still in the decoder during a pruned prefill: the engine's bookkeeping and its gathers.

Contract (index spaces as in :mod:`pruning.engine`: "orig" = the prompt as tokenised, length S; "seq" =
the sequence entering layer 0, length S'):

- :class:`PrefillState`: everything the engine records about one prefill: which seq tokens each layer
  processed (``cached(layer)``), the visual tokens per stage, what linear-attention mixers processed, the
  values merging cuts wrote, the DeepStack rows still to add, and the cache lengths after the prefill.
- :func:`shrink` ``(state, hidden (1, S_cur, D), choice) -> (1, S_new, D)``: keep every non-visual token
  and the chosen visual ones in their order, write merged values, and update ``state``.
- :func:`gather_rope` / :func:`gathered_mask`: the rotary embeddings (once per survivor set) and each
  source mask (once per source and survivor set: a hybrid model gives its layer kinds different masks)
  gathered to the survivors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import compat

__all__ = ["PrefillState", "gather_rope", "gathered_mask", "shrink"]


@dataclass
class PrefillState:
    """Bookkeeping of one prefill (see the module docstring for the index spaces)."""

    prompt_len: int
    n_visual: int  # N
    kept_orig: torch.Tensor  # (S',) orig index of each layer-0 token
    cur: torch.Tensor  # (S_cur,) seq index of each token currently in the decoder
    visual: torch.Tensor  # (S_cur,) bool: current token is a prunable visual token
    n_visual_cur: int = 0  # visual tokens currently in the decoder (host copy of visual.sum())
    layer_cols: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> seq indices it cached
    layer_visual: dict[int, int] = field(default_factory=dict)  # layer -> visual tokens it processed
    layer_seen: set = field(default_factory=set)  # layers whose prefill hook ran
    mixed: dict[int, int] = field(default_factory=dict)  # linear-attention layer -> tokens its mixer processed
    written: dict = field(default_factory=dict)  # prune layer -> ((R,) seq indices, (R, D) values) it wrote
    stages: list[tuple[int, int]] = field(default_factory=list)  # (layer, visual tokens from there on);
    # layer 0 = after the entry cut, then one row per prune layer of the method (even if it kept all)
    gathered: dict | None = None  # rope / mask gathered for the current survivors
    visual_idx: torch.Tensor | None = None  # (n_visual_cur,) current positions of the visual tokens
    additions: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (n_visual_cur, D) rows to add
    # after that layer (DeepStack), gathered to the survivors; a merged token carries its anchor's row
    decoded: int = 0  # tokens appended after the prefill (a question's own tokens, then decode steps)
    question_len: int = 0  # prompt tokens prefilled after a prefix (two-phase runs; 0 for a single pass)
    cache_lengths: list[int] | None = None  # per layer, as transformers' cache reported after the prefill
    left_cache: bool = False  # the prefill returned a KV cache (decode steps must then pass one back)

    def cached(self, layer: int) -> torch.Tensor:
        """Seq indices of the tokens layer ``layer`` processed (and holds in its KV cache)."""
        if layer in self.layer_cols:
            return self.layer_cols[layer]
        return torch.arange(self.kept_orig.numel(), device=self.kept_orig.device)


def shrink(state: PrefillState, hidden: torch.Tensor, choice) -> torch.Tensor:
    """Keep non-visual tokens and the chosen visual ones (order kept); write merged values."""
    vis = state.visual.nonzero().flatten().to(hidden.device)
    chosen = vis[choice.keep.to(hidden.device)]
    keep_local, _ = torch.cat([(~state.visual).nonzero().flatten().to(hidden.device), chosen]).sort()
    new_hidden = hidden[:, keep_local]
    if choice.values is not None:
        new_hidden[0, torch.searchsorted(keep_local, chosen)] = choice.values.to(new_hidden.dtype)
    state.cur = state.cur[keep_local.to(state.cur.device)]
    state.visual = state.visual[keep_local.to(state.visual.device)]
    state.n_visual_cur = choice.keep.numel()
    state.visual_idx = state.visual.nonzero().flatten()
    state.additions = {layer: rows[choice.keep.to(rows.device)] for layer, rows in state.additions.items()}
    return new_hidden

def gather_rope(state: PrefillState, kwargs, layer: int) -> dict:
    """Rotary embeddings gathered to the current survivors (shared by every layer until the next cut);
    masks are gathered per source mask (a hybrid model gives its layer types different masks)."""
    cur = state.cur
    cos, sin = compat.layer_rope(kwargs, layer)
    rope = (cos.index_select(-2, cur.to(cos.device)), sin.index_select(-2, cur.to(sin.device)))
    return {"len": cur.numel(), "rope": rope, "masks": {}}

def gathered_mask(state: PrefillState, mask):
    """``mask`` (the full-prompt mask a layer received, 2-D or 4-D, or None) gathered to the survivors;
    computed once per source mask and length."""
    if not isinstance(mask, torch.Tensor):
        return mask
    masks = state.gathered["masks"]
    if id(mask) not in masks:
        c = state.cur.to(mask.device)
        out = mask.index_select(-1, c)
        if out.ndim == 4:
            out = out.index_select(-2, c)
        masks[id(mask)] = (mask, out)  # the source is kept so that its id stays unique
    return masks[id(mask)][1]
