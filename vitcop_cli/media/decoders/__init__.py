"""Video decoder backends behind one interface (:class:`~.base.Decoder`; contract in :mod:`.base`).

``DECODERS`` names them, the default first: ``decord`` (today's decoder, bundled FFmpeg), ``torchcodec``
(optional extra ``vitcop[torchcodec]``, needs FFmpeg's shared libraries; ``device="cuda"`` decodes with
NVDEC) and ``pyav`` (the ``av`` package). :func:`get` imports one lazily, so no backend's library (decord
included) is needed to use another. Importing this package is cheap: no torch, no decoding library.
"""

from __future__ import annotations

import importlib

from ...errors import InputError
from .base import ClipInfo, Decoder

__all__ = ["DECODERS", "DEFAULT_DECODER", "ClipInfo", "Decoder", "get"]

DECODERS: tuple[str, ...] = ("decord", "torchcodec", "pyav")
DEFAULT_DECODER = DECODERS[0]


def get(name: str) -> type[Decoder]:
    """The :class:`Decoder` class named ``name`` (module ``.<name>_backend``, attribute ``DECODER``).

    InputError for a name not in :data:`DECODERS`, or with :meth:`Decoder.unavailable`'s reason when the
    backend cannot be used here (its package is missing, or cannot load FFmpeg)."""
    if name not in DECODERS:
        raise InputError(f"unknown decoder {name!r}; choose one of: {', '.join(DECODERS)}")
    cls: type[Decoder] = importlib.import_module(f".{name}_backend", __name__).DECODER
    reason = cls.unavailable()
    if reason:
        raise InputError(f"the {name} decoder cannot be used: {reason}")
    return cls
