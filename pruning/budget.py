"""Stage budgets: how many visual tokens each part of the LLM keeps (pure Python).

Contract (docs VITCOP.md, "Budget"). With N visual tokens in the clip, L decoder
layers 0..L-1, shallow layer Ls, deep layer Ld and deep divisor q:

* layers ``0 .. Ls-1`` process the V visual tokens left after Stage I,
* layers ``Ls .. Ld-1`` process Rs visual tokens (Stage II output),
* layers ``Ld .. L-1`` process Rd visual tokens (Stage III output),

and the layer average ``(Ls*V + (Ld-Ls)*Rs + (L-Ld)*Rd) / L`` is meant to equal r*N:

    Rs = round((L*r*N - Ls*V) / ((Ld-Ls) + (L-Ld)/q)),   Rd = round(Rs/q)

clamped to ``1 <= Rs <= V`` and ``1 <= Rd <= Rs``. Layer 0 is never pruned, hence
``0 < Ls < Ld < L``.

Choices where the spec is silent:

* Rounding is Python's ``round`` (round half to even) everywhere, also for the
  scaled deep layer ``round(22/32 * L)`` (computed exactly with integers).
* "floor(v * n)" is taken as ``floor(v * n + 1e-9)`` (see :func:`keep_count`) so that a
  product that is mathematically an integer (0.29 * 100) is not floored one too low by
  binary floating point. Stage I (``select.per_frame_topk``) and VIC use the same rule.
* Rs is computed from the float formula above; an exact .5 tie can only arise for
  ratios that are exact binary fractions, and then half-to-even applies.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

__all__ = [
    "FLOOR_EPS",
    "snap_cut_layer",
    "keep_count",
    "stage_budgets",
    "scaled_deep_layer",
    "layer_averaged_visual",
    "visual_tokens_per_layer",
]

#: Added before flooring ``fraction * n`` so float error never floors an exact integer down.
FLOOR_EPS = 1e-9

#: Reference geometry: deep layer 22 of a 32-layer LLaMA.
_REF_DEEP, _REF_LAYERS = 22, 32


def keep_count(n: int, fraction: float) -> int:
    """``max(1, floor(fraction * n))`` with a 1e-9 guard against float error (see module doc).

    n: int >= 1, fraction in (0, 1]. Returns an int in [1, n].
    """
    return min(n, max(1, math.floor(fraction * n + FLOOR_EPS)))


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    if not (0.0 < float(value) <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return float(value)


def _check_layers(n_layers: int, shallow_layer: int, deep_layer: int) -> None:
    _check_int("n_layers", n_layers, 1)
    _check_int("shallow_layer", shallow_layer, 1)
    _check_int("deep_layer", deep_layer, 2)
    if not 0 < shallow_layer < deep_layer:
        raise ValueError(
            f"shallow_layer must satisfy 0 < shallow_layer < deep_layer, "
            f"got shallow_layer={shallow_layer}, deep_layer={deep_layer}")
    if not deep_layer < n_layers:
        raise ValueError(
            f"deep_layer must be < n_layers, got deep_layer={deep_layer}, n_layers={n_layers}")


def scaled_deep_layer(n_layers: int, deep_layer: int | None = None, *,
                      shallow_layer: int = 2) -> int:
    """Deep layer Ld for a model with ``n_layers`` decoder layers.

    Returns ``deep_layer`` unchanged when given (it is validated later by
    :func:`stage_budgets`). Otherwise ``round(22/32 * n_layers)`` (exact, half to even:
    28 -> 19, 32 -> 22, 24 -> 16), clamped into ``[shallow_layer + 1, n_layers - 1]`` so
    that ``0 < shallow_layer < Ld < n_layers`` holds. Raises ValueError naming
    ``n_layers`` when the model is too shallow for that (``n_layers < shallow_layer + 2``).
    """
    if deep_layer is not None:
        return _check_int("deep_layer", deep_layer, 2)
    _check_int("n_layers", n_layers, 1)
    _check_int("shallow_layer", shallow_layer, 1)
    if n_layers < shallow_layer + 2:
        raise ValueError(
            f"n_layers={n_layers} is too shallow: need n_layers >= shallow_layer + 2 "
            f"= {shallow_layer + 2} so that 0 < shallow_layer < deep_layer < n_layers")
    ld = round(Fraction(_REF_DEEP * n_layers, _REF_LAYERS))
    return min(n_layers - 1, max(shallow_layer + 1, ld))


def snap_cut_layer(layer: int, has_keys: Sequence[bool], lo: int, hi: int) -> int | None:
    """The cut layer nearest to ``layer`` within ``[lo, hi]`` whose *previous* layer has keys.

    A key-norm cut at layer l reads the keys of layer l-1, so on a hybrid model (linear-attention
    layers have no keys) l-1 must be a softmax-attention layer. has_keys: one bool per decoder layer.
    Ties go to the shallower layer (the earlier cut, which keeps the deeper stretch's budget). Returns
    ``layer`` itself when it already fits, None when no layer in ``[lo, hi]`` does.
    Example (keys at 3, 7, 11 of 12 layers): 2 -> 4; 8 -> 8; 6 -> 4 (tie with 8, shallower wins).
    """
    candidates = [c for c in range(max(lo, 1), min(hi, len(has_keys) - 1) + 1) if has_keys[c - 1]]
    if not candidates:
        return None
    return min(candidates, key=lambda c: (abs(c - layer), c))


def stage_budgets(n_visual: int, n_layers: int, ratio: float, vision_keep: float,
                  shallow_layer: int, deep_layer: int, deep_divisor: float = 5.0,
                  n_after_stage1: int | None = None) -> tuple[int, int, int]:
    """Visual-token budgets ``(V, Rs, Rd)`` of the three LLM stages.

    n_visual: N, visual tokens of the clip (>= 1). n_layers: L. ratio: r in (0, 1],
    the target layer-averaged fraction of N. vision_keep: v in (0, 1].
    shallow_layer / deep_layer: Ls, Ld with 0 < Ls < Ld < L. deep_divisor: q >= 1.
    n_after_stage1: the real V when Stage I has already run (per-frame floors make it
    differ from floor(v*N)); must be in [1, N]. Otherwise V = max(1, floor(v*N)).

    Rs and Rd follow the module formula with round-half-even, then are clamped to
    [1, V] and [1, Rs]. Example (N=576, L=32, Ls=2, Ld=22, q=5):
    r=1/3, v=0.5 -> (288, 253, 51); r=1, v=1, q=1 -> (576, 576, 576).
    """
    _check_int("n_visual", n_visual, 1)
    _check_layers(n_layers, shallow_layer, deep_layer)
    r = _check_fraction("ratio", ratio)
    v = _check_fraction("vision_keep", vision_keep)
    if isinstance(deep_divisor, bool) or not isinstance(deep_divisor, (int, float)) \
            or not math.isfinite(deep_divisor) or deep_divisor < 1:
        raise ValueError(f"deep_divisor must be a number >= 1, got {deep_divisor!r}")
    q = float(deep_divisor)
    if n_after_stage1 is None:
        V = keep_count(n_visual, v)
    else:
        V = _check_int("n_after_stage1", n_after_stage1, 1)
        if V > n_visual:
            raise ValueError(
                f"n_after_stage1 must be <= n_visual={n_visual}, got {n_after_stage1}")
    L, Ls, Ld = n_layers, shallow_layer, deep_layer
    rs_exact = (L * r * n_visual - Ls * V) / ((Ld - Ls) + (L - Ld) / q)
    Rs = min(V, max(1, round(rs_exact)))
    Rd = min(Rs, max(1, round(Rs / q)))
    return V, Rs, Rd


def visual_tokens_per_layer(n_layers: int, V: int, Rs: int, Rd: int,
                            shallow_layer: int, deep_layer: int) -> list[int]:
    """Visual tokens each decoder layer processes: ``[V]*Ls + [Rs]*(Ld-Ls) + [Rd]*(L-Ld)``."""
    _check_layers(n_layers, shallow_layer, deep_layer)
    return ([V] * shallow_layer + [Rs] * (deep_layer - shallow_layer)
            + [Rd] * (n_layers - deep_layer))


def layer_averaged_visual(n_layers: int, V: int, Rs: int, Rd: int,
                          shallow_layer: int, deep_layer: int) -> float:
    """Mean visual tokens per layer: ``(Ls*V + (Ld-Ls)*Rs + (L-Ld)*Rd) / L``."""
    _check_layers(n_layers, shallow_layer, deep_layer)
    L, Ls, Ld = n_layers, shallow_layer, deep_layer
    return (Ls * V + (Ld - Ls) * Rs + (L - Ld) * Rd) / L
