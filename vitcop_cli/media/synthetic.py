"""A synthetic clip, decoded already: for self-tests and benchmarks that must not depend on a file.

Contract: :func:`synthetic_clip` ``(frames, width, height, seed)`` returns a video
:class:`~vitcop_cli.media.video.Visual` whose ``frames`` are a ``(T, H, W, 3)`` ``torch.uint8`` tensor:
three coloured squares moving over a gradient with light noise, sampled at 2 fps (timestamps
``t / 2``). The same arguments give the same pixels (a seeded generator). Used by ``vitcop doctor``
(which must work from any install, wheel included, where the source tree's ``samples/`` is absent)
and by ``benchmarks/gpu_suite.py``.
"""

from __future__ import annotations

import torch

from .video import Visual

__all__ = ["synthetic_clip"]


def synthetic_clip(frames: int, width: int, height: int, seed: int = 0) -> Visual:
    """``frames`` RGB frames (T, H, W, 3) uint8 at 2 fps: three squares moving over a gradient, light noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height)[:, None, None]
    x = torch.linspace(0, 1, width)[None, :, None]
    base = torch.cat([80 + 60 * x.expand(height, width, 1), 60 + 80 * y.expand(height, width, 1),
                      torch.full((height, width, 1), 110.0)], dim=-1)
    side = max(4, min(width, height) // 6)
    colours = torch.tensor([[230.0, 40, 40], [40, 200, 60], [40, 80, 230]])
    out = torch.empty(frames, height, width, 3, dtype=torch.uint8)
    for t in range(frames):
        img = base.clone()
        for k, colour in enumerate(colours):
            phase = (t / max(1, frames - 1) + k / 3) % 1.0
            cx = int(phase * (width - side))
            cy = int((0.2 + 0.3 * k) * (height - side))
            img[cy:cy + side, cx:cx + side] = colour
        img += 6 * torch.randn(height, width, 3, generator=g)
        out[t] = img.clamp(0, 255).to(torch.uint8)
    return Visual(kind="video", path="<synthetic clip>", frames=out, timestamps=[t / 2 for t in range(frames)],
                  indices=list(range(frames)), source_fps=2.0, total_frames=frames, duration_s=frames / 2,
                  width=width, height=height, sampling_fps=2.0)
