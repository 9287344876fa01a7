"""``vitcop presets``: the budgets every built-in preset gives at one model depth (no torch import).

Contract:

- :func:`model_depth` ``(model, *, offline) -> int``: the LLM depth (decoder layers) of ``model``;
  :func:`model_layout` adds a hybrid LLM's layer types (Ls / Ld snap to full-attention layers).
  ``None`` means the default model, whose depth is known (:data:`vitcop_cli.catalog.KNOWN_DEPTHS`,
  28 for Qwen2-VL-2B-Instruct) so nothing is read; so is a built-in demo model's (``tiny:<family>``,
  :mod:`vitcop_cli.models.demo_models`), which is not built for this. Otherwise the checkpoint's
  ``config.json`` is read alone (:mod:`vitcop_cli.models.model_ref`: fast one-line failures, model_type checked first, so an
  unsupported type says so) and the depth taken from ``text_config.num_hidden_layers`` or
  ``num_hidden_layers``; only a config that leaves it implicit is handed to transformers'
  ``AutoConfig`` (``trust_remote_code=False``).
- :func:`preset_table` ``(*, model, n_visual, offline) -> list[PresetRow]``: one row per built-in
  preset, strongest pruning last. A preset that does not fit the depth is an :class:`InputError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..catalog import KNOWN_DEPTHS
from ..defaults import DEFAULT_MODEL
from ..errors import InputError

__all__ = ["PresetRow", "model_depth", "model_layout", "preset_table"]


@dataclass
class PresetRow:
    """One line of ``vitcop presets``: a preset and the budgets it gives at a model depth."""

    name: str
    description: str
    ratio: float
    vision_keep: float
    n_visual: int
    n_layers: int
    V: int
    Rs: int
    Rd: int
    shallow_layer: int | None
    deep_layer: int | None
    layer_averaged: float
    full_attention: list[int] | None = None  # a hybrid LLM's full-attention layers (Ls / Ld snap after them)


def model_depth(model: str | None, *, offline: bool = False) -> int:
    """Decoder layers of ``model``'s LLM (see the module docstring)."""
    return model_layout(model, offline=offline)[0]


def model_layout(model: str | None, *, offline: bool = False) -> tuple[int, list[str] | None]:
    """(decoder layers, layer types) of ``model``'s LLM; the types are None for a dense LLM and the list of
    ``full_attention`` / ``linear_attention`` for a hybrid one (Qwen3.5: the config's ``layer_types``, or
    ``full_attention_interval`` when it lists none), so the table shows the snapped Ls / Ld."""
    if model is None:
        model = DEFAULT_MODEL
    if model in KNOWN_DEPTHS:
        return KNOWN_DEPTHS[model], None
    from .demo_models import parse

    demo = parse(model)
    if demo is not None:  # a built-in demo model: its layout is known without building it
        return demo.layout
    from .model_ref import check_model_type, declared_config, is_path_like

    declared, offline = declared_config(model, offline=offline)
    check_model_type(model, declared)
    text = declared.get("text_config") if isinstance(declared.get("text_config"), dict) else declared
    depth = text.get("num_hidden_layers", declared.get("num_hidden_layers"))
    if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 1:
        return depth, _declared_layer_types(text, depth)
    from pathlib import Path

    from transformers import AutoConfig

    source = str(Path(model).expanduser()) if is_path_like(model) else model
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=offline, trust_remote_code=False)
        text_config = config.get_text_config()
        depth = int(text_config.num_hidden_layers)
        return depth, _declared_layer_types(vars(text_config), depth)
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{model}: cannot read the model's depth from its config ({first})") from None


def _declared_layer_types(text: dict, depth: int) -> list[str] | None:
    """A hybrid LLM's layer types from its text config (None when it has no linear-attention layers)."""
    types = text.get("layer_types")
    if not (isinstance(types, list) and len(types) == depth):
        interval = text.get("full_attention_interval")
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            return None
        types = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(depth)]
    return types if "linear_attention" in types else None


def preset_table(*, model: str | None = None, n_visual: int = 4096, offline: bool = False) -> list[PresetRow]:
    """Budgets of every built-in preset at ``model``'s depth (the default model's when ``None``)."""
    from pruning.presets import PresetError, builtin_presets, load_preset

    if n_visual < 1:
        raise InputError("--visual-tokens must be at least 1")
    n_layers, layer_types = model_layout(model, offline=offline)
    rows = []
    for name in builtin_presets():
        p = load_preset(name)
        if p.is_identity:
            rows.append(PresetRow(name, p.description, p.ratio, p.vision_keep, n_visual, n_layers,
                                  n_visual, n_visual, n_visual, None, None, float(n_visual)))
            continue
        try:
            b = p.budgets(n_visual, n_layers, layer_types=layer_types)
        except PresetError as exc:
            raise InputError(str(exc)) from None
        rows.append(PresetRow(name, p.description, p.ratio, p.vision_keep, n_visual, n_layers, b.V, b.Rs, b.Rd,
                              b.shallow_layer, b.deep_layer, b.layer_averaged))
    if layer_types is not None:
        full = [i for i, t in enumerate(layer_types) if t != "linear_attention"]
        for row in rows:
            row.full_attention = full
    return sorted(rows, key=lambda r: -r.ratio)
