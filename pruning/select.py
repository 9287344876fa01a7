"""Token selection for the three pruning stages (docs VITCOP.md, Stages I-III). Pure torch.

Contract. All indices are positions in the visual-token order of the caller
(0 .. V-1); every returned index tensor is int64 and sorted ascending.

* :func:`per_frame_topk` — Stage I: per frame keep the max(1, floor(v*n_frame)) tokens
  with the LARGEST saliency.
* :func:`frame_group_ids` — VIC labels of several frames -> global group ids.
* :func:`cluster_select` — Stage II plan: which tokens stay as they are and which are
  merged, with exactly R output tokens.
* :func:`merge_values` — apply a plan to hidden states.
* :func:`smallest_k` — Stage III: keep the k tokens with the smallest key norm.

Tie-breaking (the spec is silent): equal scores go to the lower index; equal group
scores T go to the smaller group id (ascending walk and descending walk alike).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

from .budget import FLOOR_EPS

__all__ = [
    "SelectionPlan",
    "cluster_select",
    "merge_values",
    "per_frame_topk",
    "smallest_k",
    "frame_group_ids",
    "MERGE_RULES",
]

MERGE_RULES = ("reference", "mean")


@dataclass(frozen=True, eq=False)
class SelectionPlan:
    """Stage II plan over V visual tokens producing ``len(kept) + len(groups)`` tokens.

    kept: (n_kept,) int64 sorted — tokens kept individually.
    groups: list of (m_g,) int64 sorted tensors, m_g >= 1 — one per merged token,
        disjoint, ordered by anchor ascending. kept and groups partition 0..V-1.
    anchors: (len(groups),) int64 — ``groups[g][len(groups[g]) // 2]``, ascending.
    n_visual: V.
    """

    kept: torch.Tensor
    groups: list
    anchors: torch.Tensor
    n_visual: int

    @property
    def n_tokens(self) -> int:
        """Number of output tokens R = len(kept) + len(groups)."""
        return int(self.kept.numel()) + len(self.groups)

    @property
    def indices(self) -> torch.Tensor:
        """(R,) sorted union of kept indices and anchors (the surviving positions)."""
        return torch.sort(torch.cat([self.kept, self.anchors])).values


def _round_half_even_div(a: torch.Tensor, b: int) -> torch.Tensor:
    """Exact round-half-even of a / b for int64 a >= 0 and int b > 0."""
    q = torch.div(a, b, rounding_mode="floor")
    r2 = 2 * (a - q * b)
    return q + ((r2 > b) | ((r2 == b) & (q % 2 == 1))).long()


def _check_1d(name: str, t, n: int | None = None) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor")
    if n is not None and t.numel() != n:
        raise ValueError(f"{name} must have {n} elements, got {t.numel()}")


def cluster_select(groups: torch.Tensor, scores: torch.Tensor, budget: int) -> SelectionPlan:
    """Stage II cluster-aware selection (docs VITCOP.md, "Stage II").

    groups: (V,) integer group id per visual token (any ints). scores: (V,) key norms
    t_i (smaller = more salient). budget: R with 1 <= R <= V (ValueError otherwise).

    With K groups and T_g = sum of t over group g:

    * K > R: the R-1 groups with the smallest T each become one merged token; all the
      other groups together become one merged token; nothing is kept individually.
    * K <= R: every group becomes one merged token and R-K tokens are kept
      individually, quota_g = round((|G_g|-1)/(V-K) * (R-K)) capped at |G_g|-1
      (0 when V == K). The rounding is done exactly in integers (round half to even
      of the rational value — what torch.round would give without float error). If
      the quotas do not add up to R-K, groups are walked in ascending T (short) or
      descending T (over), +-1 each within [0, |G_g|-1], pass after pass, until they
      do. In each group the quota_g members with the smallest t (ties: lower index)
      are kept; the remaining >= 1 members form the merged token.

    Note: a group whose remainder is a single token still counts as a "merged" token
    (the reference rule then gives 2*h) — callers must skip Stage II when R >= V.
    Returns a :class:`SelectionPlan` with exactly R tokens.
    """
    _check_1d("groups", groups)
    V = groups.numel()
    _check_1d("scores", scores, V)
    try:
        R = operator.index(budget) if not isinstance(budget, bool) else None
    except TypeError:
        R = None
    if R is None or not 1 <= R <= V:
        raise ValueError(f"budget must be an int in [1, V={V}], got {budget!r}")
    dev = groups.device
    _, gid = torch.unique(groups, return_inverse=True)
    gid = gid.reshape(-1)
    t = scores.detach().to(torch.float64)
    sizes = torch.bincount(gid)
    K = sizes.numel()
    T = torch.zeros(K, dtype=torch.float64, device=dev).index_add_(0, gid, t)
    asc = torch.sort(T, stable=True).indices

    if K > R:
        token_of_group = torch.full((K,), R - 1, dtype=torch.long, device=dev)
        token_of_group[asc[:R - 1]] = torch.arange(R - 1, device=dev)
        token = token_of_group[gid]
        keep_mask = torch.zeros(V, dtype=torch.bool, device=dev)
        n_merged = R
    else:
        cap = sizes - 1
        if V > K:
            quota = torch.minimum(_round_half_even_div(cap * (R - K), V - K), cap)
        else:
            quota = torch.zeros_like(cap)
        diff = (R - K) - int(quota.sum())
        if diff != 0:
            desc = torch.sort(T, descending=True, stable=True).indices
            while diff != 0:
                if diff > 0:
                    order, step = asc, 1
                    eligible = quota[order] < cap[order]
                else:
                    order, step = desc, -1
                    eligible = quota[order] > 0
                pick = order[eligible][:abs(diff)]
                if pick.numel() == 0:  # impossible: sum(cap) = V-K >= R-K >= 0
                    raise RuntimeError("cluster_select: quotas cannot reach the budget")
                quota[pick] += step
                diff -= step * int(pick.numel())
        # rank of each token inside its group by (t, index)
        o = torch.sort(t, stable=True).indices
        o = o[torch.sort(gid[o], stable=True).indices]
        starts = torch.cumsum(sizes, 0) - sizes
        rank_in_group = torch.empty(V, dtype=torch.long, device=dev)
        rank_in_group[o] = torch.arange(V, device=dev) - starts[gid[o]]
        keep_mask = rank_in_group < quota[gid]
        token = gid
        n_merged = K

    kept = torch.nonzero(keep_mask).reshape(-1)
    members = torch.nonzero(~keep_mask).reshape(-1)          # ascending index
    m_tok = token[members]
    members = members[torch.sort(m_tok, stable=True).indices]  # by token, then index
    counts = torch.bincount(m_tok, minlength=n_merged)
    m_starts = torch.cumsum(counts, 0) - counts
    anchors = members[m_starts + counts // 2]
    by_anchor = torch.argsort(anchors)
    parts = torch.split(members, counts.tolist())
    group_list = [parts[i] for i in by_anchor.tolist()]
    return SelectionPlan(kept=kept, groups=group_list, anchors=anchors[by_anchor],
                         n_visual=V)


def merge_values(hidden: torch.Tensor, plan: SelectionPlan, rule: str = "reference"):
    """Apply a Stage II plan to the visual hidden states.

    hidden: (V, D) hidden states of the visual tokens in visual order.
    rule: "reference" (merged value = h_anchor + mean over the group) or "mean".
    Returns (indices, values): indices (R,) int64 ascending = kept indices and anchors
    together; values (R, D) in hidden's dtype — kept rows unchanged, merged rows by the
    rule. Accumulation is in float32 for 16-bit dtypes (else in hidden's dtype) and cast
    back once; differentiable (index_add, no in-place on inputs).
    """
    if rule not in MERGE_RULES:
        raise ValueError(f"rule must be one of {MERGE_RULES}, got {rule!r}")
    if hidden.dim() != 2 or hidden.shape[0] != plan.n_visual:
        raise ValueError(f"hidden must be (V={plan.n_visual}, D), got {tuple(hidden.shape)}")
    dev = hidden.device
    acc = torch.float32 if hidden.dtype in (torch.float16, torch.bfloat16) else hidden.dtype
    kept = plan.kept.to(dev)
    anchors = plan.anchors.to(dev)
    G = len(plan.groups)
    if G:
        members = torch.cat([g.to(dev) for g in plan.groups])
        sizes = torch.tensor([g.numel() for g in plan.groups], device=dev)
        tok = torch.repeat_interleave(torch.arange(G, device=dev), sizes)
        sums = torch.zeros(G, hidden.shape[1], dtype=acc, device=dev).index_add(
            0, tok, hidden[members].to(acc))
        merged = sums / sizes.to(acc)[:, None]
        if rule == "reference":
            merged = merged + hidden[anchors].to(acc)
        merged = merged.to(hidden.dtype)
    else:
        merged = hidden.new_empty((0, hidden.shape[1]))
    indices = torch.cat([kept, anchors])
    values = torch.cat([hidden[kept], merged])
    order = torch.argsort(indices)
    return indices[order], values[order]


def per_frame_topk(scores: torch.Tensor, frame_ids: torch.Tensor,
                   keep_fraction: float) -> torch.Tensor:
    """Stage I: per frame, the max(1, floor(keep_fraction * n_frame)) largest scores.

    scores: (n,) saliency (larger = more salient). frame_ids: (n,) int frame of each
    token (any ints, tokens of a frame need not be contiguous). keep_fraction in (0, 1].
    floor uses the 1e-9 guard of ``budget.keep_count``. Ties: lower index wins.
    Returns sorted int64 indices.
    """
    _check_1d("scores", scores)
    _check_1d("frame_ids", frame_ids, scores.numel())
    if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, (int, float)) \
            or not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction!r}")
    n = scores.numel()
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)
    dev = scores.device
    _, fid = torch.unique(frame_ids, return_inverse=True)
    fid = fid.reshape(-1)
    counts = torch.bincount(fid)
    k = torch.floor(float(keep_fraction) * counts.to(torch.float64) + FLOOR_EPS).long()
    k = torch.minimum(k.clamp(min=1), counts)
    o = torch.sort(scores.detach(), descending=True, stable=True).indices
    o = o[torch.sort(fid[o], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.long, device=dev)
    rank[o] = torch.arange(n, device=dev) - starts[fid[o]]
    return torch.nonzero(rank < k[fid]).reshape(-1)


def smallest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Stage III: sorted int64 indices of the k smallest scores (0 <= k <= n; ties: lower index)."""
    _check_1d("scores", scores)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= scores.numel():
        raise ValueError(f"k must be an int in [0, {scores.numel()}], got {k!r}")
    idx = torch.sort(scores.detach(), stable=True).indices[:k]
    return torch.sort(idx).values


def frame_group_ids(labels: torch.Tensor, frame_ids: torch.Tensor) -> torch.Tensor:
    """Global Stage II group ids from per-frame VIC labels.

    labels: (V,) int VIC labels (-1 = no cluster), frame_ids: (V,) int frame of each
    token. Tokens share a group iff same frame and same label, so each frame's -1
    tokens form one group of their own and labels of different frames never mix.
    Returns (V,) int64 ids 0..K-1, numbered in (frame id, label) order.
    """
    _check_1d("labels", labels)
    _check_1d("frame_ids", frame_ids, labels.numel())
    if labels.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=labels.device)
    pairs = torch.stack([frame_ids.long(), labels.long()], dim=1)
    _, inv = torch.unique(pairs, dim=0, return_inverse=True)
    return inv.reshape(-1)
