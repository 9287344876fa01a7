"""Turn what an lmms-eval task's ``doc_to_visual`` returns into one :class:`vitcop_cli.media.video.Visual`.

Contract: :func:`to_visual` accepts what video and image tasks return for one document — a list
(or tuple) holding exactly one item, or the item itself — where the item is

- a path (``str`` / ``os.PathLike``) to a video or image file: decoded by vitcop's own
  :func:`vitcop_cli.media.video.load_visual` (frames sampled at ``fps`` up to ``max_frames``, or exactly
  ``frames`` when the task fixes a count; images ignore both), or
- a ``PIL.Image.Image`` (image tasks keep images in the dataset): converted to RGB and wrapped as
  an image :class:`Visual` without touching the disk.

Anything else — no visual, several visuals (multi-image / multi-clip questions), audio dicts, raw
frame arrays — raises :class:`~vitcop_cli.errors.InputError` naming what was received, because vitcop
answers one question about one clip or image.
"""

from __future__ import annotations

import os

from vitcop_cli.errors import InputError
from vitcop_cli.media.video import Visual, image_visual, load_visual

__all__ = ["to_visual"]


def to_visual(raw, *, fps: float | None, frames: int | None, max_frames: int, loader=load_visual) -> Visual:
    """One :class:`Visual` from ``doc_to_visual``'s return value (see the module docstring). ``loader``: how a
    path is decoded (the model passes its ``Session.load_visual``, sized for the model)."""
    items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    items = [x for x in items if x is not None]
    if len(items) != 1:
        raise InputError(
            f"the task gives {len(items)} visuals for this question; the vitcop model answers about exactly "
            "one video or image per question"
        )
    item = items[0]
    if isinstance(item, (str, os.PathLike)):
        if frames is not None:
            return loader(item, frames=frames, max_frames=max_frames)
        return loader(item, fps=2.0 if fps is None else fps, max_frames=max_frames)
    if _is_pil_image(item):
        return image_visual(item.convert("RGB"), getattr(item, "filename", "") or "<in-memory image>")
    raise InputError(
        f"the task gives a visual of type {type(item).__name__}; the vitcop model takes a video/image file path "
        "or a PIL image"
    )


def _is_pil_image(x) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(x, Image.Image)
