"""Pure selection / budget functions of the baseline methods (uniform, divprune, fastv)."""
from __future__ import annotations

import math

import torch


def single_cut_budget(n_visual: int, n_layers: int, ratio: float, cut_layer: int = 0) -> int:
    if not 0 <= cut_layer < n_layers:
        raise ValueError(f"cut_layer must be in [0, {n_layers}), got {cut_layer}")
    r = round((n_layers * ratio * n_visual - cut_layer * n_visual) / (n_layers - cut_layer))
    return max(1, min(n_visual, r))


def evenly_spaced(n: int, k: int) -> torch.Tensor:
    if k == 1:
        return torch.tensor([n // 2])
    return torch.unique(torch.linspace(0, n - 1, k).round().long())


def max_min_diverse(features: torch.Tensor, k: int) -> torch.Tensor:
    f = torch.nn.functional.normalize(features.float(), dim=-1, eps=1e-12)
    mean = torch.nn.functional.normalize(f.mean(0), dim=0, eps=1e-12)
    first = int(torch.argmax(1 - f @ mean))
    chosen = [first]
    mind = 1 - f @ f[first]
    mind[first] = -math.inf
    for _ in range(k - 1):
        nxt = int(torch.argmax(mind))
        chosen.append(nxt)
        mind = torch.minimum(mind, 1 - f @ f[nxt])
        mind[chosen] = -math.inf
    return torch.sort(torch.tensor(chosen)).values


def last_query_attention(q_last: torch.Tensor, keys: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    h, d = q_last.shape
    rep = h // keys.shape[0]
    k = keys.float().repeat_interleave(rep, dim=0)
    scale = 1 / math.sqrt(d) if scale is None else scale
    return torch.softmax(torch.einsum("hd,hnd->hn", q_last.float(), k) * scale, dim=-1).mean(0)
