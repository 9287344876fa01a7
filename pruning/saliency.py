"""Token saliency scores (docs VITCOP.md, Stage I step 1 and Stages II/III). Pure torch.

Contract. The scores below are returned as float32 tensors on the input's device,
computed in float32 whatever the input dtype (group_sum keeps its input's dtype):

* :func:`key_norm` — t_i = ||mean over KV heads of K_i||_2 (LLM stages II/III;
  smaller = more salient).
* :func:`cls_attention` — s_i = sum over heads of the [CLS] query's attention
  probability on key i (encoders with a [CLS] token; larger = more salient).
* :func:`pseudo_cls_attention` — the same with a per-frame mean query (vitcop's
  adaptation for encoders without [CLS]); never forms an n x n matrix.
* :func:`group_sum` — patch scores -> token scores by summing consecutive groups (the
  2x2 spatial-merge group of Qwen2-VL when patches of a group are contiguous).
"""
from __future__ import annotations

import math

import torch

__all__ = ["key_norm", "cls_attention", "pseudo_cls_attention", "group_sum"]


def key_norm(keys: torch.Tensor) -> torch.Tensor:
    """L2 norm of the mean over KV heads of each key.

    keys: (n, H_kv, head_dim), or (..., n, H_kv, head_dim) with leading batch dims.
    Returns (n,) — (..., n) with leading dims kept — float32.
    """
    if keys.dim() < 3:
        raise ValueError(f"keys must be (..., n, H_kv, head_dim), got {tuple(keys.shape)}")
    return torch.linalg.vector_norm(keys.to(torch.float32).mean(dim=-2), dim=-1)


def _scale(scale, d: int) -> float:
    return 1.0 / math.sqrt(d) if scale is None else float(scale)


def cls_attention(q_cls: torch.Tensor, keys: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Sum over heads of softmax(q_cls . K^T * scale).

    q_cls: (H, d) the [CLS] query per head. keys: (H, n, d) every key the [CLS] query
    attends to (for CLIP that includes [CLS] itself: slice the result to the patches).
    scale: default 1/sqrt(d). Returns (n,) float32.
    """
    if q_cls.dim() != 2 or keys.dim() != 3 or keys.shape[0] != q_cls.shape[0] \
            or keys.shape[2] != q_cls.shape[1]:
        raise ValueError(f"expected q_cls (H, d) and keys (H, n, d), got "
                         f"{tuple(q_cls.shape)} and {tuple(keys.shape)}")
    s = _scale(scale, q_cls.shape[-1])
    logits = torch.einsum("hd,hnd->hn", q_cls.to(torch.float32), keys.to(torch.float32)) * s
    return torch.softmax(logits, dim=-1).sum(dim=0)


def pseudo_cls_attention(q: torch.Tensor, k: torch.Tensor, frame_ids: torch.Tensor,
                         scale: float | None = None) -> torch.Tensor:
    """Pseudo-[CLS] attention of every patch within its own frame.

    q, k: (H, n, d) queries and keys of all patches (as the block's attention uses
    them, i.e. after rotary embedding). frame_ids: (n,) int frame of each patch (any
    ints, patches of a frame need not be contiguous). scale: default 1/sqrt(d).
    For frame f and head h: qbar = mean of q[h, i] over i in f;
    s_i = sum_h softmax over j in f of (qbar . k[h, j] * scale) evaluated at i.
    Vectorised over frames (segment mean by index_add, segment softmax by
    scatter_reduce amax + index_add). Returns (n,) float32; each frame sums to H.
    """
    if q.dim() != 3 or q.shape != k.shape:
        raise ValueError(f"q and k must both be (H, n, d), got {tuple(q.shape)} and {tuple(k.shape)}")
    H, n, d = q.shape
    if frame_ids.dim() != 1 or frame_ids.numel() != n:
        raise ValueError(f"frame_ids must be (n={n},), got {tuple(frame_ids.shape)}")
    if n == 0:
        return torch.empty(0, dtype=torch.float32, device=q.device)
    s = _scale(scale, d)
    qf, kf = q.to(torch.float32), k.to(torch.float32)
    _, fid = torch.unique(frame_ids.to(q.device), return_inverse=True)
    fid = fid.reshape(-1)
    F = int(fid.max()) + 1
    counts = torch.bincount(fid, minlength=F).to(torch.float32)
    qbar = torch.zeros(H, F, d, dtype=torch.float32, device=q.device).index_add(1, fid, qf)
    qbar = qbar / counts[None, :, None]
    logits = (qbar[:, fid, :] * kf).sum(dim=-1) * s                     # (H, n)
    idx = fid.unsqueeze(0).expand(H, n)
    amax = torch.full((H, F), -math.inf, dtype=torch.float32, device=q.device)
    amax = amax.scatter_reduce(1, idx, logits, reduce="amax", include_self=True)
    e = torch.exp(logits - amax[:, fid])
    den = torch.zeros(H, F, dtype=torch.float32, device=q.device).index_add(1, fid, e)
    return (e / den[:, fid]).sum(dim=0)


def group_sum(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """Sum consecutive groups: (n,) -> (n // group_size,). n must be divisible."""
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
    if scores.numel() % group_size:
        raise ValueError(f"scores length {scores.numel()} is not divisible by "
                         f"group_size {group_size}")
    return scores.reshape(-1, group_size).sum(dim=1)
