"""Presets and pruning methods by name: each check returns the thing or raises a one-line InputError."""

from __future__ import annotations

from pruning.methods import method_class, method_names
from pruning.presets import Preset, PresetError, load_preset

from ..errors import InputError

__all__ = ["as_preset", "check_method", "check_preset", "list_methods"]


def check_method(method: str) -> str:
    """``method`` if it names a registered pruning method, else an InputError listing them."""
    if method not in method_names():
        raise InputError(f"unknown pruning method {method!r}; choose one of {', '.join(method_names())}")
    return method


def list_methods() -> list[tuple[str, str]]:
    """(name, one-line description) of every pruning method."""
    return [(name, method_class(name).description) for name in method_names()]


def check_preset(preset: str | Preset) -> Preset:
    """The preset named (built-in name or YAML path), or an InputError naming what is wrong."""
    return as_preset(preset)


def as_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return load_preset(preset)
    except PresetError as exc:
        raise InputError(str(exc)) from None
