"""Efficient Video Sampling (EVS, arXiv 2510.14624): the video pruning serving engines ship. Pure torch.

EVS prunes before the LLM only, from the projected visual embeddings (what the LLM would read).
For one video laid out as T temporal patches of P = h x w LLM tokens each (after the model's
spatial merge / pooling), token (t, i) — temporal patch t, spatial position i — scores

    d[0, i] = +inf                                   (the first temporal patch is always kept)
    d[t, i] = 1 - cos(e[t, i], e[t-1, i])            for t >= 1

and the R = max(P, floor(T * P * (1 - q))) tokens with the largest d are kept, in their original
order (so with their original positions). q in [0, 1) is the pruning rate (vLLM's
``--video-pruning-rate``); q = 0 keeps everything. A static video keeps only its first patch; a
token whose content changed since the previous patch outranks one that did not.

Contract. Indices are positions in the video's token order (0 .. T*P - 1, patch-major, then the
row-major spatial grid); returned index tensors are int64, sorted ascending, unique. Scores are
float32 (float64 for float64 input) whatever the input dtype. A token exactly equal to its
predecessor scores exactly 0 (1 - cos would carry rounding noise), so the tokens of a static region
tie, and ties go to the lower index. A zero vector that is not such a repeat has cos = 0 (d = 1):
norms are clamped to 1e-12, never NaN.
``floor`` tolerates float error of 1e-9 (q = 1 - r computed in floats must not lose a token).
"""

from __future__ import annotations

import math

import torch

from .budget import _check_int

__all__ = ["evs_retained_count", "temporal_dissimilarity", "evs_select"]

NORM_EPS = 1e-12
FLOOR_EPS = 1e-9


def _check_rate(q) -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q):
        raise ValueError(f"q must be a number in [0, 1), got {q!r}")
    if not 0.0 <= float(q) < 1.0:
        raise ValueError(f"q must be in [0, 1), got {q}")
    return float(q)


def evs_retained_count(tokens_per_patch: int, n_patches: int, q: float) -> int:
    """R = max(P, floor(T * P * (1 - q))), never more than T * P.

    tokens_per_patch: P >= 1. n_patches: T >= 1. q: pruning rate in [0, 1).
    Example: P = 192, T = 16, q = 8/9 -> max(192, floor(341.33)) = 341; q = 0.99 -> 192.
    """
    p = _check_int("tokens_per_patch", tokens_per_patch, 1)
    t = _check_int("n_patches", n_patches, 1)
    q = _check_rate(q)
    total = t * p
    return min(total, max(p, math.floor(total * (1.0 - q) + FLOOR_EPS)))


def temporal_dissimilarity(embeds: torch.Tensor) -> torch.Tensor:
    """d (T, P): 1 - cos to the same spatial position in the previous temporal patch; d[0] = +inf.

    embeds: (T, P, D) projected embeddings of one video, any float dtype. Returns float32
    (float64 for float64 input) on embeds' device; d[1:] lies in [0, 2] (clamped), exactly 0 where
    a token equals its predecessor."""
    if not isinstance(embeds, torch.Tensor) or embeds.dim() != 3 or 0 in embeds.shape:
        raise ValueError(f"embeds must be a non-empty (T, P, D) tensor, got "
                         f"{tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__}")
    e = embeds.detach().to(torch.float64 if embeds.dtype == torch.float64 else torch.float32)
    same = (e[1:] == e[:-1]).all(-1)  # exact repeats score exactly 0 (no rounding noise)
    e = e / torch.linalg.vector_norm(e, dim=-1, keepdim=True).clamp(min=NORM_EPS)
    d = torch.empty(e.shape[:2], dtype=e.dtype, device=e.device)
    d[0] = math.inf
    d[1:] = (1.0 - (e[1:] * e[:-1]).sum(-1)).clamp_(0.0, 2.0).masked_fill_(same, 0.0)
    return d


def evs_select(embeds: torch.Tensor, tokens_per_patch: int, q: float) -> torch.Tensor:
    """Indices of the tokens EVS keeps in one video.

    embeds: (n, D) the video's projected embeddings in sequence order, n = T * P with
    P = ``tokens_per_patch`` (row-major h x w grid per temporal patch). q: rate in [0, 1).
    Returns (R,) int64 sorted ascending with R = :func:`evs_retained_count` (P, T, q); the
    first P indices are always 0 .. P-1.
    """
    if not isinstance(embeds, torch.Tensor) or embeds.dim() != 2:
        raise ValueError(f"embeds must be a 2-D (n, D) tensor, got "
                         f"{tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__}")
    p = _check_int("tokens_per_patch", tokens_per_patch, 1)
    n = embeds.shape[0]
    if n == 0 or n % p:
        raise ValueError(f"a video of {n} tokens is not a whole number of temporal patches of {p}")
    keep = evs_retained_count(p, n // p, q)
    if keep == n:
        return torch.arange(n, dtype=torch.long, device=embeds.device)
    d = temporal_dissimilarity(embeds.reshape(n // p, p, -1)).flatten()
    order = torch.sort(d, descending=True, stable=True).indices  # ties: lower index first
    return torch.sort(order[:keep]).values
