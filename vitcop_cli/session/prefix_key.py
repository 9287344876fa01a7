"""The key of a kept pruned prefix: everything its tokens and KV entries depend on, and nothing else.

Contract: :func:`clip_key` ``(model, digest, options) -> str`` (64 hex digits). Two questions may share a
prefix only when their keys are equal: same model (its identity string), same media bytes
(:func:`media_digest`, SHA-256 of the file's content: a renamed copy hits, an edited file misses), same
sampling and pixel options, decoder and resize path (they change the pixels), same preset, method and
system prompt. The key is necessary, not sufficient: a question is still answered on a prefix only when its
prompt's tokens up to the end of the visual are exactly the prefix's (:meth:`pruning.prefix.PrunedPrefix.covers`),
so text placed before the visual is a miss too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..media.decoders import DEFAULT_DECODER

__all__ = ["ClipOptions", "clip_key", "media_digest"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ClipOptions:
    """What a prefix depends on besides the model and the media bytes (``Session.open``'s options)."""

    preset: str  # the preset's label
    method: str
    system: str | None = None
    fps: float | None = None
    frames: int | None = None
    max_frames: int = 768
    max_pixels: int | None = None
    min_pixels: int | None = None
    resize: str = "fast"
    decoder: str | None = None  # None: the default decoder, spelled out (the same pixels, the same key)
    decode_device: str = "cpu"

    def __post_init__(self):
        if self.decoder is None:
            object.__setattr__(self, "decoder", DEFAULT_DECODER)


def media_digest(path: str | Path) -> str:
    """SHA-256 of the file's bytes, read in 1 MiB chunks (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def clip_key(model: str, digest: str, options: ClipOptions) -> str:
    """The prefix key of ``digest`` (a :func:`media_digest`) under ``options`` on ``model`` (its identity)."""
    blob = json.dumps({"model": model, "media": digest, **asdict(options)}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()
