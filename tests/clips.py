"""Test clips written with PyAV: an H.264 MP4 from frames made in the test."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import av
import numpy as np


def h264(path: Path, frames: Iterable[np.ndarray], rate: int = 8) -> Path:
    """Write ``frames`` (each ``(H, W, 3)`` uint8 RGB, H and W even, as libx264 wants) to ``path``; returns it."""
    frames = iter(frames)
    first = next(frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in (first, *frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
