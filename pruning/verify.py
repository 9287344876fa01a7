"""Run-time proof that what ran is what the method planned (never report an unpruned run as pruned).

After every prefill under a non-identity method on a prompt with visual tokens, the engine calls
:func:`check_prefill`. It compares the engine's record of the prefill with the method's plan and with
the KV cache transformers actually filled, and raises :class:`PruningNotApplied` — naming the installed
transformers release and the tested range — when hooks did not fire, a stage was skipped, a stage kept
another number of tokens than budgeted, or any layer cached another number of tokens than it processed.

Generation modes the engine cannot serve are refused before they run, with :class:`UnsupportedGeneration`.
"""

from __future__ import annotations

from . import compat


class PruningNotApplied(RuntimeError):
    """Pruning did not run as planned (typically: a transformers release moved an internal)."""


class UnsupportedGeneration(ValueError):
    """A generation mode the pruning engine cannot serve correctly (refused before it runs)."""


def fail(detail: str) -> PruningNotApplied:
    return PruningNotApplied(
        f"pruning was not applied as planned ({detail}); {compat.version_note()}; "
        "install a supported version or report this"
    )


def check_prefill(state, prune_layers, planned, shape, cache, *, expect_cache: bool = True) -> None:
    """Raise :class:`PruningNotApplied` unless the prefill in ``state`` matches the plan.

    state: the engine's ``PrefillState``; prune_layers: the method's prune layers (sorted);
    planned: the method's planned visual counts [after entry, after each prune layer] or None;
    shape: the LLM's :class:`~pruning.adapters.LMShape` (layer count and types);
    cache: the KV cache the language model returned (None if it returned none); expect_cache: False
    for a ``use_cache=False`` forward (then only the plan is checked).

    Softmax-attention layers: each KV-cache length equals the tokens the engine let into the layer.
    Linear-attention layers (no per-token cache): the tokens the layer's mixer really processed
    (recorded by the engine's hook on the mixer) equal the same plan, and the recurrent / conv states
    have their fixed shapes (batch 1; the mixer's widths and conv kernel).
    """
    n_layers = shape.layers
    missing = [layer for layer in range(n_layers) if layer not in state.layer_seen]
    if missing:
        raise fail(f"the hooks of decoder layer(s) {_few(missing)} did not run")
    ran = [layer for layer, _ in state.stages[1:]]
    if ran != sorted(prune_layers):
        raise fail(f"prune layers {sorted(prune_layers)} planned, {ran} ran")
    counts = [count for _, count in state.stages]
    if planned is not None and counts != list(planned):
        raise fail(f"visual tokens per stage {counts}, planned {list(planned)}")
    if cache is None:
        if not expect_cache:
            return
        raise fail("the language model returned no KV cache")
    check_cache(state, shape, cache)


def check_cache(state, shape, cache, what: str = "") -> None:
    """Raise :class:`PruningNotApplied` unless every layer of ``cache`` holds what ``state`` says it
    processed: a softmax layer's KV length, a linear layer's recorded token count and state shapes. Run
    after each prefill and on every copy of a kept prefix before a question continues it (``what`` names it)."""
    for layer in range(shape.layers):
        expected = state.cached(layer).numel()
        if not shape.has_keys(layer):
            _check_linear_layer(state, shape, cache, layer, expected)
            continue
        got = compat.cache_length(cache, layer)
        if got != expected:
            raise fail(f"layer {layer}{what} cached {got} tokens, expected {expected}")


def _check_linear_layer(state, shape, cache, layer: int, expected: int) -> None:
    got = state.mixed.get(layer)
    if got is None:
        raise fail(f"the linear-attention mixer of layer {layer} did not run in the prefill")
    if got != expected:
        raise fail(f"linear-attention layer {layer} processed {got} tokens, expected {expected}")
    lin = shape.linear
    want = ((1, 2 * lin.key_heads * lin.key_dim + lin.value_heads * lin.value_dim, lin.conv_kernel),
            (1, lin.value_heads, lin.key_dim, lin.value_dim))
    try:
        shapes = compat.linear_state_shapes(cache, layer)
    except (AttributeError, IndexError, KeyError, RuntimeError, TypeError) as exc:
        raise fail(f"linear-attention layer {layer}: its cached state cannot be read ({exc})") from None
    if shapes != want:
        raise fail(f"linear-attention layer {layer} holds states of shapes {shapes}, expected {want}")


def _few(items: list[int]) -> str:
    return ", ".join(map(str, items[:6])) + (" ..." if len(items) > 6 else "")
