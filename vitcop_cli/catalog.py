"""Static facts the fast commands print without importing torch / transformers.

``vitcop methods``, ``vitcop presets`` (without ``--model``), ``--help`` and ``--version`` must
answer in well under a second, and importing torch alone takes seconds. So the few facts they
need are written here as plain data:

- :data:`METHODS`: name -> one-line description of every pruning method, in registry order
  (the live registry is :func:`pruning.methods.method_names` / ``method_class(name).description``).
- :data:`MODEL_TYPES`: the ``model_type`` values that have an adapter
  (live: :func:`pruning.adapters.supported_model_types`).
- :data:`KNOWN_DEPTHS`: LLM depth (decoder layers) of well-known checkpoints, so ``vitcop
  presets`` shows the default model's real budgets without fetching its config.

``tests/test_cli_consistency.py`` fails when any of these drifts from the live registries, so a new
method or family is added here in the same change.
"""

from __future__ import annotations

from .defaults import DEFAULT_MODEL

__all__ = ["KNOWN_DEPTHS", "METHODS", "MODEL_TYPES", "unsupported_type_message"]

METHODS: dict[str, str] = {
    "vitcop": "ViTCoP: encoder saliency filter, cluster-aware key-norm merging at Ls, key-norm cut at Ld",
    "fastv": "at layer K keep the visual tokens the last prompt token attends to most at layer K-1",
    "divprune": "keep a max-min diverse subset of projected visual features before the LLM",
    "uniform": "keep evenly spaced visual tokens before the LLM (sanity floor)",
    "evs": "EVS (vLLM/SGLang): keep video tokens that changed most since the previous temporal patch",
}

MODEL_TYPES: tuple[str, ...] = (
    "llava_onevision", "qwen2_5_vl", "qwen2_vl", "qwen3_5", "qwen3_5_moe", "qwen3_vl", "qwen3_vl_moe",
)

KNOWN_DEPTHS: dict[str, int] = {
    DEFAULT_MODEL: 28,  # Qwen/Qwen2-VL-2B-Instruct: Qwen2-1.5B LLM, 28 decoder layers
}


def unsupported_type_message(model: str, model_type) -> str:
    """The one line ``ask`` / ``presets`` / ``batch`` print for a checkpoint without an adapter."""
    if not isinstance(model_type, str) or not model_type:
        return f"{model}: config.json declares no model_type; supported model types: {', '.join(MODEL_TYPES)}"
    shown = model_type if len(model_type) <= 40 else model_type[:39] + "…"
    return f"{model}: model_type {shown!r} is not supported; supported: {', '.join(MODEL_TYPES)}"
