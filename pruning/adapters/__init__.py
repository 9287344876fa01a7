"""Model-family adapters, looked up by ``config.model_type``.

A new family is one new file here plus one line in ``_REGISTRY``.
"""

from __future__ import annotations

from .base import EncoderRecord, FamilyAdapter, LMShape, VisualTokens
from .llava_onevision import LlavaOnevisionAdapter
from .qwen2_5_vl import Qwen2_5_VLAdapter
from .qwen2_vl import Qwen2VLAdapter
from .qwen3_5 import Qwen3_5Adapter
from .qwen3_vl import Qwen3VLAdapter

_REGISTRY: dict[str, type[FamilyAdapter]] = {
    model_type: cls
    for cls in (Qwen2VLAdapter, Qwen2_5_VLAdapter, Qwen3VLAdapter, Qwen3_5Adapter, LlavaOnevisionAdapter)
    for model_type in cls.model_types
}


class UnsupportedModelError(ValueError):
    """The checkpoint's model_type has no adapter."""


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def adapter_class(model_type: str) -> type[FamilyAdapter]:
    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(supported_model_types())}"
        ) from None


def adapter_for(model) -> FamilyAdapter:
    """The adapter instance for a loaded model (looked up by ``model.config.model_type``)."""
    return adapter_class(model.config.model_type)(model)


__all__ = [
    "EncoderRecord",
    "FamilyAdapter",
    "LMShape",
    "UnsupportedModelError",
    "VisualTokens",
    "adapter_class",
    "adapter_for",
    "supported_model_types",
]
