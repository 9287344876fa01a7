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

Hybrid models (Qwen3.5) pass ``layer_types`` and a :class:`LinearAttention` shape. A
``linear_attention`` layer (Gated DeltaNet) over n tokens costs, with Hk key heads of width dk, Hv
value heads of width dv, conv kernel K and chunk C (64, transformers' chunked kernel):

* projections: ``2*n*h*(2*Hk*dk + 2*Hv*dv + 2*Hv)`` (qkv, z, a, b) and ``2*n*Hv*dv*h`` (out);
* causal depthwise conv over the ``2*Hk*dk + Hv*dv`` q/k/v channels: ``2*n*(2*Hk*dk + Hv*dv)*K``;
* the chunked delta rule over ``n_pad = ceil(n/C)*C`` tokens, per value head (keys are shared by
  ``Hv/Hk`` heads), per chunk: intra-chunk ``k k^T``, ``q k^T`` and the ``k_beta`` decay product
  (``3 * 2*C^2*dk``), the two ``(C x C) @ (C x dv)`` products (``2 * 2*C^2*dv``), the triangular
  recurrence of the chunk's WY form (``2*C^3/3``) and three ``C x dk x dv`` state products
  (``3 * 2*C*dk*dv``: the decayed keys against the state, the queries against it, the state update);
* the same MLP term as above (a MoE passes its active width: experts per token x expert width, plus
  a shared expert).
Softmax layers of such a model have a sigmoid output gate computed by a q projection twice as wide
(``query_gate=True`` adds ``2*n*h*H*d``). A linear layer's cost is linear in n, so pruning saves there
exactly the share of tokens cut.

The paper's own convention (:func:`paper_prefill_flops`, reported beside ours so users can compare
with its tables) counts per layer ``4*n*d^2 + 2*n^2*d + 3*n*d*m`` with d = hidden and m = MLP width:
multiply-adds, no GQA, full (not causal) n^2 attention, no logits. The two differ in unit and
detail; their pruned / unpruned ratios are close.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence

from dataclasses import dataclass

__all__ = ["LinearAttention", "decoder_prefill_flops", "layer_flops", "linear_layer_flops", "paper_prefill_flops"]

#: chunk length of transformers' chunked gated delta rule (``torch_chunk_gated_delta_rule``)
DELTA_CHUNK = 64


@dataclass(frozen=True)
class LinearAttention:
    """Shape of a Gated DeltaNet token mixer: key / value heads and widths, conv kernel, chunk length."""

    key_heads: int
    value_heads: int
    key_dim: int
    value_dim: int
    conv_kernel: int
    chunk: int = DELTA_CHUNK


def _pos_int(name: str, value, minimum: int = 1) -> int:
    try:
        ivalue = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        ivalue = None
    if ivalue is None or ivalue < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return ivalue


def layer_flops(n: int, *, hidden: int, n_heads: int, n_kv_heads: int, head_dim: int,
                intermediate: int, gated_mlp: bool = True, query_gate: bool = False) -> float:
    """FLOPs of one softmax-attention decoder layer over n tokens (see module doc)."""
    n = _pos_int("seq_len", n, 0)
    proj = 2.0 * n * hidden * head_dim * ((3 if query_gate else 2) * n_heads + 2 * n_kv_heads)
    attn = 4.0 * n_heads * head_dim * (n * (n + 1) / 2)
    return proj + attn + _mlp_flops(n, hidden, intermediate, gated_mlp)


def _mlp_flops(n: int, hidden: int, intermediate: int, gated_mlp: bool) -> float:
    return (3 if gated_mlp else 2) * 2.0 * n * hidden * intermediate


def linear_layer_flops(n: int, *, hidden: int, linear: LinearAttention, intermediate: int,
                       gated_mlp: bool = True) -> float:
    """FLOPs of one Gated DeltaNet decoder layer over n tokens (see module doc)."""
    n = _pos_int("seq_len", n, 0)
    hk, dk, hv, dv, c = linear.key_heads, linear.key_dim, linear.value_heads, linear.value_dim, linear.chunk
    channels = 2 * hk * dk + hv * dv
    proj = 2.0 * n * hidden * (2 * hk * dk + 2 * hv * dv + 2 * hv) + 2.0 * n * hv * dv * hidden
    conv = 2.0 * n * channels * linear.conv_kernel
    chunks = -(-n // c)
    per_chunk = 3 * 2.0 * c * c * dk + 2 * 2.0 * c * c * dv + 2.0 * c ** 3 / 3 + 3 * 2.0 * c * dk * dv
    return proj + conv + hv * chunks * per_chunk + _mlp_flops(n, hidden, intermediate, gated_mlp)


def decoder_prefill_flops(seq_lens: Sequence[int], *, hidden: int, n_heads: int,
                          n_kv_heads: int, head_dim: int, intermediate: int,
                          vocab: int = 0, gated_mlp: bool = True,
                          layer_types: Sequence[str] | None = None,
                          linear: LinearAttention | None = None, query_gate: bool = False) -> float:
    """Prefill FLOPs of the decoder stack.

    seq_lens: one int per decoder layer, the tokens that layer processed. layer_types: one
    ``full_attention`` / ``linear_attention`` per layer (None: all softmax attention); a
    ``linear_attention`` layer needs ``linear``. query_gate: softmax layers have a gated q projection.
    Returns sum over layers of :func:`layer_flops` / :func:`linear_layer_flops` plus
    ``2*hidden*vocab`` (last-token logits). Raises ValueError for bad shapes or an empty seq_lens.
    """
    for name, val in (("hidden", hidden), ("n_heads", n_heads), ("n_kv_heads", n_kv_heads),
                      ("head_dim", head_dim), ("intermediate", intermediate)):
        _pos_int(name, val)
    _pos_int("vocab", vocab, 0)
    seq_lens = list(seq_lens)
    if not seq_lens:
        raise ValueError("seq_lens must have one entry per decoder layer, got none")
    types = list(layer_types) if layer_types is not None else ["full_attention"] * len(seq_lens)
    if len(types) != len(seq_lens):
        raise ValueError(f"layer_types has {len(types)} entries for {len(seq_lens)} layers")
    if "linear_attention" in types and linear is None:
        raise ValueError("linear_attention layers need the LinearAttention shape")
    total = 0.0
    for n, kind in zip(seq_lens, types):
        if kind == "linear_attention":
            total += linear_layer_flops(n, hidden=hidden, linear=linear, intermediate=intermediate,
                                        gated_mlp=gated_mlp)
        else:
            total += layer_flops(n, hidden=hidden, n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim,
                                 intermediate=intermediate, gated_mlp=gated_mlp, query_gate=query_gate)
    return total + 2.0 * hidden * vocab


def paper_prefill_flops(seq_lens: Sequence[int], *, hidden: int, intermediate: int) -> float:
    """The paper's prefill figure: sum over layers of ``4*n*d^2 + 2*n^2*d + 3*n*d*m`` (multiply-adds).

    seq_lens: one int per decoder layer, the tokens that layer processed; d = hidden, m = intermediate.
    The convention knows one layer kind, so a hybrid model's linear-attention layers are counted as
    softmax layers here (label: the paper's convention; :func:`decoder_prefill_flops` is the real cost).
    """
    d, m = _pos_int("hidden", hidden), _pos_int("intermediate", intermediate)
    seq_lens = [_pos_int("seq_len", n, 0) for n in seq_lens]
    if not seq_lens:
        raise ValueError("seq_lens must have one entry per decoder layer, got none")
    return float(sum(4 * n * d * d + 2 * n * n * d + 3 * n * d * m for n in seq_lens))
