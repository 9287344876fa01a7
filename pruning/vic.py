"""VIC: density-peak clustering with a spatial limit (docs VITCOP.md, "VIC"). Pure torch.

Contract. For the n kept tokens of ONE frame with features X (n, D) and grid positions
P (n, 2) in [0, 1):

1. d_ij = ||X_i - X_j||, sp_ij = ||P_i - P_j|| (Euclidean).
2. rho_i = sum_j exp(-(d_ij / dc)^2), self included.
3. parent_i = argmin d_ij over j != i with rho_j >= rho_i and sp_ij <= radius;
   delta_i = that d_ij, or +inf (and no parent) when no such j exists.
4. gamma_i = rho_i * delta_i; the max(1, floor(f*n)) largest gamma are the centres,
   labelled by their rank 0, 1, ... (largest gamma = 0).
5. Every other token takes its parent's label, repeatedly; a token whose parent chain
   never reaches a centre (chain ends at a parentless non-centre, or runs into a cycle,
   which equal rho values allow) is labelled -1.

Choices where the spec is silent:

* Numerics: everything is computed in float64 (on the features' device) whatever
  the input dtype. Feature
  distances use the Gram form on mean-centred features (one BLAS matmul), clamped at
  0, symmetrised and with an exact-zero diagonal.
* ``dc="auto"``: the 2% quantile (linear interpolation, as ``torch.quantile``) of all
  off-diagonal entries d_ij, i != j (each unordered pair counted twice, as in the
  matrix). For n == 1, or when that quantile is not a positive finite number (e.g.
  duplicated features), dc falls back to ``DC_EPS`` = 1e-12, so every density term is
  1 for identical features and ~0 otherwise; nothing divides by zero.
* ``floor(f*n)`` uses the same 1e-9 guard as ``budget.keep_count``.
* Permutation stability: the tokens are first put in a canonical order, the stable
  lexicographic order of (row, col) — positions are distinct within a frame. If some
  positions coincide, the features (column by column) break the tie. All computation
  (densities, argmin ties, the stable sort of gamma that ranks centres, e.g. among
  several gamma = inf) happens in that order and the result is un-permuted, so
  permuting the input permutes the labels identically. Remaining ties (equal d_ij for
  the parent, equal gamma for centres) go to the token earlier in canonical order.
  Only tokens identical in both position and features stay interchangeable (they may
  swap labels under a permutation; no input-order-free rule can tell them apart).
* Label propagation is vectorised pointer jumping: parent pointers of centres and of
  parentless tokens point to themselves, and ceil(log2 n) + 1 squarings reach
  parent^(2^k) with 2^k >= n, which is a centre exactly when the chain reaches one.
* Many frames at once: :func:`cluster_frames` clusters every frame of a clip, each on its
  own, with frames of equal token count sharing every tensor op (:func:`cluster_batch`,
  a leading frame dimension G). :func:`cluster` is the G = 1 case of the same code. The
  point is the per-op cost: a clip of 32 temporal patches costs the ops of one frame, not
  32 times them with 4 host synchronisations each (on a GPU, kernel launches and syncs
  dominate clusterings of ~100 tokens). Labels equal frame-by-frame clustering (tested
  against the naive loop and :func:`cluster` per frame).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .budget import keep_count

__all__ = ["DC_EPS", "DensityPeaks", "auto_dc", "cluster", "cluster_batch", "cluster_frames", "density_peaks"]

#: Floor of the cutoff distance dc (degenerate "auto" quantile, n == 1).
DC_EPS = 1e-12
#: Quantile used by ``dc="auto"``.
AUTO_DC_QUANTILE = 0.02


@dataclass(frozen=True, eq=False)
class DensityPeaks:
    """Intermediate VIC quantities, all in the caller's input order.

    rho (n,) float64 densities; delta (n,) float64 (inf where no parent);
    parent (n,) int64 parent index or -1; dc: the cutoff actually used.
    """

    rho: torch.Tensor
    delta: torch.Tensor
    parent: torch.Tensor
    dc: float


def _canonical_order(features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(G, n) permutations putting each frame's tokens in stable lexicographic (row, col[, features]) order.

    features (G, n, D), positions (G, n, 2)."""
    g, n = positions.shape[:2]
    order = torch.arange(n, device=positions.device).expand(g, n)
    for key in (positions[..., 1], positions[..., 0]):  # col, then (stably) row
        order = order.gather(1, torch.sort(key.gather(1, order), dim=1, stable=True).indices)
    if n < 2:
        return order
    p = positions.gather(1, order[..., None].expand(g, n, 2))
    coinciding = (p[:, 1:] == p[:, :-1]).all(dim=2).any(dim=1)
    if bool(coinciding.any()):
        order = order.clone()
        for frame in coinciding.nonzero().flatten().tolist():
            # Coinciding positions: full lexsort on (row, col, f_0, ..., f_{D-1}).
            x, pos = features[frame], positions[frame]
            o = torch.arange(n, device=positions.device)
            for c in range(x.shape[1] - 1, -1, -1):
                o = o[torch.sort(x[o, c], stable=True).indices]
            for key in (pos[:, 1], pos[:, 0]):
                o = o[torch.sort(key[o], stable=True).indices]
            order[frame] = o
    return order


def _feature_sq_distances(x: torch.Tensor) -> torch.Tensor:
    """(G, n, D) float64 -> (G, n, n) squared Euclidean distances, symmetric, zero diagonal."""
    x = x - x.mean(dim=1, keepdim=True)
    sq = (x * x).sum(dim=2)
    d2 = torch.baddbmm(sq[:, :, None] + sq[:, None, :], x, x.transpose(1, 2), alpha=-2.0)
    d2 = d2.add_(d2.transpose(1, 2).clone()).mul_(0.5).clamp_(min=0.0)
    d2.diagonal(dim1=1, dim2=2).fill_(0.0)
    return d2


def auto_dc(dist: torch.Tensor, quantile: float = AUTO_DC_QUANTILE) -> float:
    """``quantile`` of the off-diagonal entries of a square distance matrix (n, n).

    ``dist`` must be >= 0 with a zero diagonal. Linear interpolation like
    ``torch.quantile`` (no size limit). Returns ``DC_EPS`` when n < 2 or the value is
    not positive and finite.
    """
    return float(_auto_dc(dist[None], quantile)[0])


def _auto_dc(dist: torch.Tensor, quantile: float = AUTO_DC_QUANTILE) -> torch.Tensor:
    """:func:`auto_dc` of each of G matrices at once: (G, n, n) -> (G,) float64."""
    g, n = dist.shape[:2]
    if n < 2:
        return torch.full((g,), DC_EPS, dtype=torch.float64, device=dist.device)
    m = n * (n - 1)  # off-diagonal entries
    pos = quantile * (m - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, m - 1)
    flat = dist.reshape(g, -1).to(torch.float64)
    # The n diagonal zeros sort first, so the k-th smallest (0-based) off-diagonal
    # entry is the (k + n)-th smallest entry of the whole matrix.
    v_lo = torch.kthvalue(flat, lo + n + 1, dim=1).values
    v_hi = v_lo
    if hi != lo:
        at_most = flat <= v_lo[:, None]
        above = flat.masked_fill(at_most, math.inf).min(dim=1).values
        v_hi = torch.where(at_most.sum(dim=1) <= hi + n, above, v_lo)
    val = v_lo + (pos - lo) * (v_hi - v_lo)
    return torch.where(torch.isfinite(val) & (val > DC_EPS), val, torch.full_like(val, DC_EPS))


def _check_inputs(features, positions, dc, radius, batched: bool = False):
    dims = "(G, n, D)" if batched else "(n, D)"
    if features.dim() != (3 if batched else 2):
        raise ValueError(f"features must be {dims}, got shape {tuple(features.shape)}")
    if positions.shape != (*features.shape[:-1], 2):
        raise ValueError(f"positions must be {dims[:-2]}2) matching features {tuple(features.shape)}, "
                         f"got shape {tuple(positions.shape)}")
    if isinstance(dc, str):
        if dc != "auto":
            raise ValueError(f"dc must be 'auto' or a positive number, got {dc!r}")
    elif isinstance(dc, bool) or not isinstance(dc, (int, float)) or not (dc > 0) \
            or not math.isfinite(dc):
        raise ValueError(f"dc must be 'auto' or a positive number, got {dc!r}")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not (radius >= 0):
        raise ValueError(f"radius must be a number >= 0, got {radius!r}")


def _check_fraction(center_fraction):
    if isinstance(center_fraction, bool) or not isinstance(center_fraction, (int, float)) \
            or not (0 < center_fraction <= 1):
        raise ValueError(f"center_fraction must be in (0, 1], got {center_fraction!r}")


def _peaks_canonical(x: torch.Tensor, p: torch.Tensor, dc, radius: float):
    """VIC steps 1-3 on canonical-order float64 inputs x (G, n, D), p (G, n, 2).
    Returns rho (G, n), delta (G, n), parent (G, n), dc (G,)."""
    d2 = _feature_sq_distances(x)
    d = d2.sqrt()
    if dc == "auto":
        dc_val = _auto_dc(d)
    else:
        dc_val = torch.full((x.shape[0],), max(float(dc), DC_EPS), dtype=torch.float64, device=x.device)
    rho = d2.mul_((-1.0 / (dc_val * dc_val))[:, None, None]).exp_().sum(dim=2)  # d2 is consumed here
    del d2
    sp = torch.cdist(p, p, compute_mode="donot_use_mm_for_euclid_dist")
    barred = (rho[:, None, :] < rho[:, :, None]).logical_or_(sp > radius)
    barred.diagonal(dim1=1, dim2=2).fill_(True)
    delta, parent = d.masked_fill_(barred, math.inf).min(dim=2)  # ties: first (canonical) index
    parent = torch.where(torch.isinf(delta), torch.full_like(parent, -1), parent)
    return rho, delta, parent, dc_val


def _prepare(features, positions):
    """Canonical-order float64 copies of (G, n, D) features and (G, n, 2) positions, and the (G, n) order."""
    x = features.detach().to(torch.float64)
    p = positions.detach().to(x.device, torch.float64)
    order = _canonical_order(x, p)
    rows = torch.arange(order.shape[0], device=order.device)[:, None]
    return x[rows, order], p[rows, order], order


def density_peaks(features: torch.Tensor, positions: torch.Tensor, *, dc="auto",
                  radius: float = 0.6) -> DensityPeaks:
    """VIC steps 1-3 (densities, parents, deltas) for inspection and tests.

    features (n, D), positions (n, 2). Returned tensors are in input order; parent
    holds input indices. Same canonical-order computation as :func:`cluster`.
    """
    _check_inputs(features, positions, dc, radius)
    n = features.shape[0]
    if n == 0:
        e = torch.empty(0, dtype=torch.float64, device=features.device)
        return DensityPeaks(e, e.clone(), torch.empty(0, dtype=torch.long,
                                                      device=features.device), DC_EPS)
    x, p, order = _prepare(features[None], positions[None])
    rho_c, delta_c, parent_c, dc_val = (t[0] for t in _peaks_canonical(x, p, dc, float(radius)))
    order = order[0]
    inv = torch.empty_like(order)
    inv[order] = torch.arange(n, device=order.device)
    parent_in = torch.where(parent_c >= 0, order[parent_c.clamp(min=0)], parent_c)
    return DensityPeaks(rho_c[inv], delta_c[inv], parent_in[inv], float(dc_val))


def cluster(features: torch.Tensor, positions: torch.Tensor, *, dc, center_fraction: float,
            radius: float) -> torch.Tensor:
    """VIC labels of one frame's tokens.

    features: (n, D) any float dtype/device (key vectors of the encoder block).
    positions: (n, 2) (row/H, col/W) in [0, 1), distinct within the frame.
    dc: "auto" or a positive float. center_fraction: f in (0, 1]. radius: k >= 0.
    Returns: (n,) int64 on the features' device, centre ranks 0..C-1 and -1 for
    tokens whose parent chain reaches no centre. Permuting the inputs permutes the
    labels identically (see module doc).
    """
    _check_inputs(features, positions, dc, radius)
    _check_fraction(center_fraction)
    return _cluster_batch(features[None], positions[None], dc, float(center_fraction), float(radius))[0]


def cluster_batch(features: torch.Tensor, positions: torch.Tensor, *, dc, center_fraction: float,
                  radius: float) -> torch.Tensor:
    """VIC labels of G frames with n tokens each, in one pass of batched tensor ops.

    features (G, n, D), positions (G, n, 2) -> (G, n) int64 labels, row g equal to
    ``cluster(features[g], positions[g], ...)`` (each frame is clustered on its own; only the
    ops are shared, which saves the per-op cost of G small clusterings — on a GPU, G times the
    kernel launches and host synchronisations).
    """
    _check_inputs(features, positions, dc, radius, batched=True)
    _check_fraction(center_fraction)
    return _cluster_batch(features, positions, dc, float(center_fraction), float(radius))


def cluster_frames(features: torch.Tensor, positions: torch.Tensor, frame_ids: torch.Tensor, *, dc,
                   center_fraction: float, radius: float) -> torch.Tensor:
    """VIC per frame of tokens from many frames: features (N, D), positions (N, 2), frame_ids (N,).

    Returns (N,) int64 labels local to each frame (ranks within the frame, -1 as in :func:`cluster`),
    equal to running :func:`cluster` on each frame's tokens in their input order. Frames with the same
    token count are clustered together by :func:`cluster_batch`.
    """
    _check_inputs(features, positions, dc, radius)
    _check_fraction(center_fraction)
    if frame_ids.shape != features.shape[:1]:
        raise ValueError(f"frame_ids must be ({features.shape[0]},), got shape {tuple(frame_ids.shape)}")
    labels = torch.full((features.shape[0],), -1, dtype=torch.long, device=features.device)
    if features.shape[0] == 0:
        return labels
    by_frame = torch.argsort(frame_ids, stable=True)  # each frame's tokens, in input order, frame by frame
    _, counts = torch.unique_consecutive(frame_ids[by_frame], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    for count in torch.unique(counts).tolist():
        first = starts[counts == count]
        idx = by_frame[first[:, None] + torch.arange(count, device=first.device)]  # (G, count)
        labels[idx] = _cluster_batch(features[idx], positions[idx], dc, float(center_fraction),
                                     float(radius)).to(labels.device)
    return labels


def _cluster_batch(features, positions, dc, center_fraction: float, radius: float) -> torch.Tensor:
    g, n = features.shape[:2]
    if n == 0:
        return torch.empty(g, 0, dtype=torch.long, device=features.device)
    x, p, order = _prepare(features, positions)
    rho, delta, parent, _ = _peaks_canonical(x, p, dc, radius)

    gamma = rho * delta  # rho > 0 (self term), so no nan; inf where no parent
    n_centres = keep_count(n, center_fraction)
    ranked = torch.sort(gamma, dim=1, descending=True, stable=True).indices[:, :n_centres]  # (G, C)
    dev = x.device
    is_centre = torch.zeros(g, n, dtype=torch.bool, device=dev).scatter_(1, ranked, True)
    rank = torch.full((g, n), -1, dtype=torch.long, device=dev)
    rank.scatter_(1, ranked, torch.arange(n_centres, device=dev).expand(g, n_centres))

    idx = torch.arange(n, device=dev).expand(g, n)
    ptr = torch.where(is_centre | (parent < 0), idx, parent)
    for _ in range(math.ceil(math.log2(max(n, 2))) + 1):
        ptr = ptr.gather(1, ptr)
    labels_c = torch.where(is_centre.gather(1, ptr), rank.gather(1, ptr), torch.full_like(rank, -1))
    return torch.empty_like(labels_c).scatter_(1, order, labels_c)  # labels[order] = labels_c
