"""Reference runs the pruned model is proven against (used by the tests and by ``vitcop doctor``).

:class:`KeyMask` turns an *unpruned* run into the reference for "dropping tokens at layer L": from
layer ``start`` on, every decoder layer gets a 4-D mask that hides the keys at ``dropped`` prompt
positions (causal otherwise), and no ``position_ids``. A pruned run that drops exactly those tokens at
layer ``start`` must give the same logits (to float tolerance) and the same greedy tokens.
"""

from __future__ import annotations

import torch

from . import compat


class KeyMask:
    """Hooks on ``adapter.decoder_layers[start:]``; ``dropped`` (k,) long prompt positions; removable."""

    def __init__(self, model, adapter, dropped: torch.Tensor, start: int):
        self.dropped, self.hooks = dropped, []
        for layer in range(start, len(adapter.decoder_layers)):
            self.hooks.append(adapter.decoder_layers[layer].register_forward_pre_hook(self._hook, with_kwargs=True))

    def _hook(self, module, args, kwargs):
        hidden = compat.layer_hidden(args, kwargs)
        q = hidden.shape[1]
        past = compat.cache_length(compat.find_cache(kwargs), module.self_attn.layer_idx)
        kv = past + q
        rows = torch.arange(past, kv, device=hidden.device)[:, None]
        cols = torch.arange(kv, device=hidden.device)[None, :]
        allowed = (cols <= rows) & ~torch.isin(cols, self.dropped.to(hidden.device))
        mask = torch.zeros(1, 1, q, kv, dtype=hidden.dtype, device=hidden.device)
        kwargs[compat.MASK] = mask.masked_fill(~allowed, torch.finfo(hidden.dtype).min)
        kwargs[compat.POSITION_IDS] = None
        return args, kwargs

    def remove(self):
        for h in self.hooks:
            h.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def dropped_before(adapter, input_ids: torch.Tensor, state, layer: int) -> torch.Tensor:
    """(k,) prompt positions of the visual tokens that layer ``layer`` of a pruned prefill no longer saw."""
    seen = set(state.kept_orig[state.cached(layer)].tolist())
    visual = adapter.visual_mask(input_ids)[0].nonzero().flatten().tolist()
    return torch.tensor([i for i in visual if i not in seen], dtype=torch.long)
