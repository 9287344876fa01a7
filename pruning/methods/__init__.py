"""Pruning methods (policies) plugged into the shared engine, looked up by name.

``vitcop`` is the product; ``fastv``, ``divprune`` and ``uniform`` are baselines that take the same
layer-averaged ratio from the preset, so rows compare at equal budget.
"""

from __future__ import annotations

from .base import EntryContext, LayerChoice, LayerContext, Method
from .baselines import DivPruneMethod, FastVMethod, UniformMethod
from .evs import EVSMethod
from .vitcop import VitcopMethod

_REGISTRY: dict[str, type[Method]] = {
    cls.name: cls for cls in (VitcopMethod, FastVMethod, DivPruneMethod, UniformMethod, EVSMethod)
}


def method_names() -> list[str]:
    return list(_REGISTRY)


def method_class(name: str) -> type[Method]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown pruning method {name!r}; choose one of {', '.join(_REGISTRY)}") from None


__all__ = ["EntryContext", "LayerChoice", "LayerContext", "Method", "method_class", "method_names"]
