"""Budget and selection functions of the baseline methods (uniform, divprune, fastv). Pure torch.

Contract. Indices are positions in the visual-token order of the caller (0 .. n-1); every
returned index tensor is int64, sorted ascending and free of duplicates. Scores are float32.
Computation is in float32 (float64 when the input is float64) whatever the input dtype.

* :func:`single_cut_budget` — R, the visual tokens kept by a method that prunes once, at the
  entry of one layer, so that the layer-averaged visual tokens equal ratio * N.
* :func:`evenly_spaced` — ``uniform``: k evenly spaced indices over 0 .. n-1.
* :func:`max_min_diverse` — ``divprune``: greedy max-min diverse subset on cosine distance
  (DivPrune, CVPR 2025).
* :func:`last_query_attention` — ``fastv``: attention of the last prompt token's query on
  every key, averaged over heads (FastV, ECCV 2024; larger = more attended).

Tie-breaking (the papers are silent): equal scores go to the lower index.
"""
from __future__ import annotations

import math

import torch

from .budget import _check_fraction, _check_int
from .select import _round_half_even_div

__all__ = ["single_cut_budget", "evenly_spaced", "max_min_diverse", "last_query_attention"]

#: Norms are clamped to this before dividing, so zero vectors give cos = 0, never NaN.
NORM_EPS = 1e-12


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def single_cut_budget(n_visual: int, n_layers: int, ratio: float, cut_layer: int = 0) -> int:
    """Visual tokens R kept by a method that prunes once, at the entry of layer ``cut_layer``.

    n_visual: N >= 1. n_layers: L >= 1. ratio: r in (0, 1], the target layer-averaged
    fraction of N. cut_layer: c with 0 <= c < L (0 = before the LLM, so every layer sees R).
    Layers 0 .. c-1 see all N tokens and layers c .. L-1 see R, so c*N + (L-c)*R = L*r*N:

        R = round((L*r*N - c*N) / (L - c))       (Python round, half to even)

    clamped to [1, N]. Example (N=576, L=32, r=1/9): c=0 -> 64, c=2 -> round(896/30) = 30.
    When the target is unreachable (the cut is too late for the ratio: c/L > r roughly)
    R clamps to 1 and the real layer average ``(c*N + (L-c)*R) / L`` is above r*N.
    Returns an int in [1, N].
    """
    N = _check_int("n_visual", n_visual, 1)
    L = _check_int("n_layers", n_layers, 1)
    r = _check_fraction("ratio", ratio)
    c = _check_int("cut_layer", cut_layer, 0)
    if not c < L:
        raise ValueError(f"cut_layer must be < n_layers={L}, got {cut_layer}")
    R = round((L * r * N - c * N) / (L - c))
    return min(N, max(1, R))


def evenly_spaced(n: int, k: int) -> torch.Tensor:
    """``uniform``: k indices evenly spaced over 0 .. n-1.

    n: int >= 1. k: int with 1 <= k <= n. For k >= 2, index i (0 <= i < k) is
    round(i * (n-1) / (k-1)) with round half to even — ``torch.linspace(0, n-1, k).round()``
    — but computed exactly in int64, so float error never moves an exact .5 tie. Both
    ends 0 and n-1 are included. The spacing (n-1)/(k-1) is >= 1, so rounded neighbours
    never collide (round(x+s) - round(x) >= s - 1 > 0 for s > 1; s = 1 is k == n, the
    identity arange); a cumulative-max repair that keeps the k indices strictly increasing
    would still apply if they did. k == 1 -> the middle index ``[n // 2]``.
    Returns (k,) int64, sorted ascending, unique, on the CPU.
    """
    n = _check_int("n", n, 1)
    k = _check_int("k", k, 1)
    if k > n:
        raise ValueError(f"k must be <= n={n}, got {k}")
    if k == 1:
        return torch.tensor([n // 2], dtype=torch.long)
    if k == n:
        return torch.arange(n, dtype=torch.long)
    i = torch.arange(k, dtype=torch.long)
    idx = _round_half_even_div(i * (n - 1), k - 1)
    # Deterministic collision repair (a no-op, see above): idx[i] - i made non-decreasing.
    idx = torch.cummax(idx - i, dim=0).values + i
    return idx


def max_min_diverse(features: torch.Tensor, k: int) -> torch.Tensor:
    """``divprune``: greedy max-min diverse subset of k tokens on cosine distance.

    features: (n, D) one feature vector per token (any float dtype). k: int, 1 <= k <= n.
    Distance d(i, j) = 1 - cos(f_i, f_j), clamped to [0, 2]; norms are clamped to 1e-12
    so a zero vector has cos = 0 (distance 1) to everything, itself included — never NaN.

    * First token: the one with the largest cosine distance to the mean feature
      m = mean_i f_i (of the raw features). (The DivPrune reference code instead starts
      from the token farthest from its nearest neighbour; the rest is the same greedy.)
    * Then k-1 times: add the unselected token whose minimum distance to the selected
      set is largest.

    Ties: lower index (exact duplicates always tie). The [0, 2] clamp also turns float
    noise that pushes 1 - cos just below 0 or above 2 (parallel copies at different
    scales) into exact ties; noise inside (0, 2) is not removed.
    Each step is one (n, D) x (D,) product and an argmax, vectorised over n; the loop
    over the k selections is inherent to greedy max-min. No host synchronisation inside
    the loop. Memory O(n*D); no n x n matrix is formed.
    Returns (k,) int64 sorted ascending, on features' device.
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        raise ValueError(f"features must be a 2-D (n, D) tensor, got "
                         f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__}")
    n = features.shape[0]
    k = _check_int("k", k, 1)
    if k > n:
        raise ValueError(f"k must be <= n={n}, got {k}")
    dev = features.device
    f = features.detach().to(_acc_dtype(features))
    m = f.mean(dim=0)
    f = f / torch.linalg.vector_norm(f, dim=1, keepdim=True).clamp(min=NORM_EPS)
    m = m / torch.linalg.vector_norm(m).clamp(min=NORM_EPS)

    def dist(v: torch.Tensor) -> torch.Tensor:          # (n,) distance of every token to v
        return (1.0 - f @ v).clamp_(0.0, 2.0)

    nxt = torch.argmax(dist(m)).reshape(1)              # first maximal value = lower index
    chosen = [nxt]
    min_d = torch.full((n,), math.inf, dtype=f.dtype, device=dev)
    for _ in range(1, k):
        min_d = torch.minimum(min_d, dist(f.index_select(0, nxt)[0]))
        min_d.index_fill_(0, nxt, -math.inf)            # never pick a selected token again
        nxt = torch.argmax(min_d).reshape(1)
        chosen.append(nxt)
    return torch.sort(torch.cat(chosen)).values


def last_query_attention(q_last: torch.Tensor, keys: torch.Tensor,
                         scale: float | None = None) -> torch.Tensor:
    """``fastv`` score: attention of the last prompt token on every key, mean over heads.

    q_last: (H, d) the last prompt token's query at one layer, per query head, after the
    rotary embedding. keys: (H_kv, n, d) that layer's keys for the whole sequence, after
    the rotary embedding; H must be a multiple of H_kv (GQA: query head h reads kv head
    h // (H // H_kv), as transformers' ``repeat_kv``; the keys are not copied).
    scale: default 1/sqrt(d). No mask: the last token attends to the whole sequence.

        s_j = (1/H) * sum_h softmax_j(q_last[h] . keys[h // G, j] * scale)

    Returns (n,) float32 on keys' device; sums to 1 (each head's softmax sums to 1).
    """
    if not isinstance(q_last, torch.Tensor) or q_last.dim() != 2:
        raise ValueError(f"q_last must be (H, d), got "
                         f"{tuple(q_last.shape) if isinstance(q_last, torch.Tensor) else type(q_last).__name__}")
    if not isinstance(keys, torch.Tensor) or keys.dim() != 3:
        raise ValueError(f"keys must be (H_kv, n, d), got "
                         f"{tuple(keys.shape) if isinstance(keys, torch.Tensor) else type(keys).__name__}")
    H, d = q_last.shape
    H_kv, n, d_k = keys.shape
    if d_k != d:
        raise ValueError(f"keys head_dim {d_k} != q_last head_dim {d}")
    if H_kv < 1 or H % H_kv:
        raise ValueError(f"keys must have H_kv heads dividing H={H}, got H_kv={H_kv}")
    if scale is None:
        s = 1.0 / math.sqrt(d)
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number or None, got {scale!r}")
    else:
        s = float(scale)
    q = q_last.detach().to(device=keys.device, dtype=torch.float32).reshape(H_kv, H // H_kv, d)
    logits = torch.einsum("kgd,knd->kgn", q, keys.detach().to(torch.float32)) * s
    return torch.softmax(logits, dim=-1).reshape(H, n).mean(dim=0)
