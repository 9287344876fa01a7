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
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .budget import keep_count

__all__ = ["DC_EPS", "DensityPeaks", "cluster", "density_peaks", "auto_dc"]

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
    """Permutation putting tokens in stable lexicographic (row, col[, features]) order."""
    n = positions.shape[0]
    order = torch.arange(n, device=positions.device)
    keys = [positions[:, 0], positions[:, 1]]
    # Cheap path: sort by col then (stably) by row.
    for key in reversed(keys):
        order = order[torch.sort(key[order], stable=True).indices]
    p = positions[order]
    if n > 1 and bool((p[1:] == p[:-1]).all(dim=1).any()):
        # Coinciding positions: full lexsort on (row, col, f_0, ..., f_{D-1}).
        order = torch.arange(n, device=positions.device)
        for c in range(features.shape[1] - 1, -1, -1):
            order = order[torch.sort(features[order, c], stable=True).indices]
        for key in reversed(keys):
            order = order[torch.sort(key[order], stable=True).indices]
    return order


def _feature_sq_distances(x: torch.Tensor) -> torch.Tensor:
    """(n, D) float64 -> (n, n) squared Euclidean distances, symmetric, zero diagonal."""
    x = x - x.mean(dim=0, keepdim=True)
    sq = (x * x).sum(dim=1)
    d2 = torch.addmm(sq[:, None] + sq[None, :], x, x.T, alpha=-2.0)
    d2 = d2.add_(d2.T.clone()).mul_(0.5)
    return d2.clamp_(min=0.0).fill_diagonal_(0.0)


def auto_dc(dist: torch.Tensor, quantile: float = AUTO_DC_QUANTILE) -> float:
    """``quantile`` of the off-diagonal entries of a square distance matrix (n, n).

    ``dist`` must be >= 0 with a zero diagonal. Linear interpolation like
    ``torch.quantile`` (no size limit). Returns ``DC_EPS`` when n < 2 or the value is
    not positive and finite.
    """
    n = dist.shape[0]
    if n < 2:
        return DC_EPS
    m = n * (n - 1)  # off-diagonal entries
    pos = quantile * (m - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, m - 1)
    flat = dist.reshape(-1)
    # The n diagonal zeros sort first, so the k-th smallest (0-based) off-diagonal
    # entry is the (k + n)-th smallest entry of the whole matrix.
    v_lo = float(torch.kthvalue(flat, lo + n + 1).values)
    v_hi = v_lo
    if hi != lo and int((flat <= v_lo).sum()) <= hi + n:
        v_hi = float(flat[flat > v_lo].min())
    val = v_lo + (pos - lo) * (v_hi - v_lo)
    if not math.isfinite(val) or val <= DC_EPS:
        return DC_EPS
    return val


def _check_inputs(features, positions, dc, radius):
    if features.dim() != 2:
        raise ValueError(f"features must be (n, D), got shape {tuple(features.shape)}")
    if positions.dim() != 2 or positions.shape[1] != 2 or positions.shape[0] != features.shape[0]:
        raise ValueError(f"positions must be (n, 2) with n={features.shape[0]}, "
                         f"got shape {tuple(positions.shape)}")
    if isinstance(dc, str):
        if dc != "auto":
            raise ValueError(f"dc must be 'auto' or a positive number, got {dc!r}")
    elif isinstance(dc, bool) or not isinstance(dc, (int, float)) or not (dc > 0) \
            or not math.isfinite(dc):
        raise ValueError(f"dc must be 'auto' or a positive number, got {dc!r}")
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not (radius >= 0):
        raise ValueError(f"radius must be a number >= 0, got {radius!r}")


def _peaks_canonical(x: torch.Tensor, p: torch.Tensor, dc, radius: float):
    """VIC steps 1-3 on canonical-order float64 inputs. Returns rho, delta, parent, dc."""
    d2 = _feature_sq_distances(x)
    d = d2.sqrt()
    dc_val = auto_dc(d) if dc == "auto" else max(float(dc), DC_EPS)
    rho = d2.mul_(-1.0 / (dc_val * dc_val)).exp_().sum(dim=1)  # d2 is consumed here
    del d2
    sp = torch.cdist(p, p, compute_mode="donot_use_mm_for_euclid_dist")
    barred = (rho[None, :] < rho[:, None]).logical_or_(sp > radius)
    barred.fill_diagonal_(True)
    delta, parent = d.masked_fill_(barred, math.inf).min(dim=1)  # ties: first (canonical) index
    parent = torch.where(torch.isinf(delta), torch.full_like(parent, -1), parent)
    return rho, delta, parent, dc_val


def _prepare(features, positions):
    x = features.detach().to(torch.float64)
    p = positions.detach().to(x.device, torch.float64)
    order = _canonical_order(x, p)
    return x[order], p[order], order


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
    x, p, order = _prepare(features, positions)
    rho_c, delta_c, parent_c, dc_val = _peaks_canonical(x, p, dc, float(radius))
    inv = torch.empty_like(order)
    inv[order] = torch.arange(n, device=order.device)
    parent_in = torch.where(parent_c >= 0, order[parent_c.clamp(min=0)], parent_c)
    return DensityPeaks(rho_c[inv], delta_c[inv], parent_in[inv], dc_val)


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
    if isinstance(center_fraction, bool) or not isinstance(center_fraction, (int, float)) \
            or not (0 < center_fraction <= 1):
        raise ValueError(f"center_fraction must be in (0, 1], got {center_fraction!r}")
    n = features.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=features.device)
    x, p, order = _prepare(features, positions)
    rho, delta, parent, _ = _peaks_canonical(x, p, dc, float(radius))

    gamma = rho * delta  # rho > 0 (self term), so no nan; inf where no parent
    n_centres = keep_count(n, float(center_fraction))
    ranked = torch.sort(gamma, descending=True, stable=True).indices[:n_centres]
    dev = x.device
    is_centre = torch.zeros(n, dtype=torch.bool, device=dev)
    is_centre[ranked] = True
    rank = torch.full((n,), -1, dtype=torch.long, device=dev)
    rank[ranked] = torch.arange(n_centres, device=dev)

    idx = torch.arange(n, device=dev)
    ptr = torch.where(is_centre | (parent < 0), idx, parent)
    for _ in range(math.ceil(math.log2(max(n, 2))) + 1):
        ptr = ptr[ptr]
    labels_c = torch.where(is_centre[ptr], rank[ptr], torch.full_like(rank, -1))

    labels = torch.empty_like(labels_c)
    labels[order] = labels_c
    return labels
