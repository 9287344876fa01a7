"""LLM prefill FLOPs from the decoder's real shapes (docs VITCOP.md, "Reports"). Pure Python.

Contract. One multiply-add = 2 FLOPs. For a decoder layer that processes n tokens
with hidden size h, H query heads, H_kv key/value heads (GQA), head_dim d and MLP
width m:

* projections: q and o ``2*n*h*H*d`` each; k and v ``2*n*h*H_kv*d`` each;
* attention: causal masking gives ``n*(n+1)/2`` query-key pairs, each costing two
  matmuls (scores q.k and the weighted sum of v) of ``2*d`` FLOPs per head:
  ``4 * H * d * n*(n+1)/2``;
* MLP: ``2*n*h*m`` per matrix, 3 matrices when gated (gate/up/down, SwiGLU), else 2;
* once per forward: the last-token logit row ``2*h*vocab`` (vocab=0 leaves it out).

Not counted (small, and the same with and without pruning up to n): norms, biases,
rotary embedding, softmax, activations, residual adds, the embedding lookup. A pruned
layer processes fewer tokens, so passing each layer's own n gives the pruned cost; its
n counts every token the layer processes (text and visual), and its attention is
counted as causal self-attention over those n tokens.

The paper's own convention (:func:`paper_prefill_flops`, reported beside ours so users can compare
with its tables) counts per layer ``4*n*d^2 + 2*n^2*d + 3*n*d*m`` with d = hidden and m = MLP width:
multiply-adds, no GQA, full (not causal) n^2 attention, no logits. The two differ in unit and
detail; their pruned / unpruned ratios are close.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence

__all__ = ["decoder_prefill_flops", "layer_flops", "paper_prefill_flops"]


def _pos_int(name: str, value, minimum: int = 1) -> int:
    try:
        ivalue = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        ivalue = None
    if ivalue is None or ivalue < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return ivalue


def layer_flops(n: int, *, hidden: int, n_heads: int, n_kv_heads: int, head_dim: int,
                intermediate: int, gated_mlp: bool = True) -> float:
    """FLOPs of one decoder layer over n tokens (see module doc)."""
    n = _pos_int("seq_len", n, 0)
    proj = 2.0 * n * hidden * head_dim * (2 * n_heads + 2 * n_kv_heads)
    attn = 4.0 * n_heads * head_dim * (n * (n + 1) / 2)
    mlp = (3 if gated_mlp else 2) * 2.0 * n * hidden * intermediate
    return proj + attn + mlp


def decoder_prefill_flops(seq_lens: Sequence[int], *, hidden: int, n_heads: int,
                          n_kv_heads: int, head_dim: int, intermediate: int,
                          vocab: int = 0, gated_mlp: bool = True) -> float:
    """Prefill FLOPs of the decoder stack.

    seq_lens: one int per decoder layer, the tokens that layer processed.
    Returns sum over layers of :func:`layer_flops` plus ``2*hidden*vocab`` (last-token
    logits). Raises ValueError for bad shapes or an empty seq_lens.
    """
    for name, val in (("hidden", hidden), ("n_heads", n_heads), ("n_kv_heads", n_kv_heads),
                      ("head_dim", head_dim), ("intermediate", intermediate)):
        _pos_int(name, val)
    _pos_int("vocab", vocab, 0)
    seq_lens = list(seq_lens)
    if not seq_lens:
        raise ValueError("seq_lens must have one entry per decoder layer, got none")
    total = sum(layer_flops(n, hidden=hidden, n_heads=n_heads, n_kv_heads=n_kv_heads,
                            head_dim=head_dim, intermediate=intermediate,
                            gated_mlp=gated_mlp) for n in seq_lens)
    return total + 2.0 * hidden * vocab


def paper_prefill_flops(seq_lens: Sequence[int], *, hidden: int, intermediate: int) -> float:
    """The paper's prefill figure: sum over layers of ``4*n*d^2 + 2*n^2*d + 3*n*d*m`` (multiply-adds).

    seq_lens: one int per decoder layer, the tokens that layer processed; d = hidden, m = intermediate.
    """
    d, m = _pos_int("hidden", hidden), _pos_int("intermediate", intermediate)
    seq_lens = [_pos_int("seq_len", n, 0) for n in seq_lens]
    if not seq_lens:
        raise ValueError("seq_lens must have one entry per decoder layer, got none")
    return float(sum(4 * n * d * d + 2 * n * n * d + 3 * n * d * m for n in seq_lens))
