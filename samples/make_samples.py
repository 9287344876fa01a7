"""Render the sample clips, the still image and the question file in this folder.

Deterministic: no randomness, frames drawn with Pillow, H.264 (libx264, one thread, fixed CRF)
when PyAV's FFmpeg has it, MPEG-4 Part 2 otherwise. Needs PyAV (``pip install av``) and Pillow.

    python samples/make_samples.py            # writes next to this script
    python samples/make_samples.py --out DIR

Outputs:
    shapes.mp4      8 s, 320x240, 24 fps: a red circle moves left -> right while a blue square
                    moves top -> bottom, on a light grey background.
    bounce.mp4      6 s, 448x336, 30 fps: a yellow ball bounces on a dark blue floor while a green
                    rectangle grows from the left edge.
    scene.png       320x240 still: red circle, blue square, yellow ball and green rectangle.
    questions.jsonl multiple-choice (options + answer letter) and open (reference answer) questions.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND = (236, 236, 228)
RED = (220, 30, 30)
BLUE = (30, 60, 220)
YELLOW = (250, 210, 20)
GREEN = (30, 170, 60)
FLOOR = (40, 50, 110)


def shapes_frame(i: int, n: int, width: int = 320, height: int = 240) -> np.ndarray:
    """Red circle left -> right (middle band), blue square top -> bottom (right third)."""
    t = i / (n - 1)
    img = Image.new("RGB", (width, height), BACKGROUND)
    d = ImageDraw.Draw(img)
    r = 22
    cx = round(r + 4 + t * (width - 2 * r - 8))
    cy = height // 2 + 40
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=RED)
    s = 40
    sx = width // 2 - s // 2 - 40
    sy = round(4 + t * (height - s - 8))
    d.rectangle([sx, sy, sx + s, sy + s], fill=BLUE)
    return np.asarray(img)


def bounce_frame(i: int, n: int, fps: int, width: int = 448, height: int = 336) -> np.ndarray:
    """Yellow ball bouncing (|sin|, period 1.5 s) moving right; green rectangle growing."""
    sec = i / fps
    t = i / (n - 1)
    img = Image.new("RGB", (width, height), BACKGROUND)
    d = ImageDraw.Draw(img)
    floor_y = height - 40
    d.rectangle([0, floor_y, width, height], fill=FLOOR)
    r = 20
    bx = round(80 + t * (width - 80 - r - 10))
    bounce = abs(math.sin(math.pi * sec / 1.5))
    by = round(floor_y - r - bounce * 170)
    d.ellipse([bx - r, by - r, bx + r, by + r], fill=YELLOW)
    gw = round(20 + t * 200)
    gh = round(20 + t * 80)
    d.rectangle([10, 20, 10 + gw, 20 + gh], fill=GREEN)
    return np.asarray(img)


def scene_image(width: int = 320, height: int = 240) -> Image.Image:
    img = Image.new("RGB", (width, height), BACKGROUND)
    d = ImageDraw.Draw(img)
    d.rectangle([0, height - 30, width, height], fill=FLOOR)
    d.ellipse([40, 60, 100, 120], fill=RED)
    d.rectangle([140, 40, 200, 100], fill=BLUE)
    d.ellipse([240, 160, 276, 196], fill=YELLOW)
    d.rectangle([30, 150, 180, 195], fill=GREEN)
    return img


def _codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_clip(path: Path, frames, fps: int, width: int, height: int) -> str:
    import av

    codec = _codec()
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1  # single-threaded encode: byte-identical output
        if codec == "libx264":
            stream.options = {"crf": "26", "preset": "medium", "threads": "1", "g": str(2 * fps)}
        else:
            stream.bit_rate = 300_000
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return codec


QUESTIONS = [
    {"id": "shapes-1", "video": "shapes.mp4", "question": "What color is the circle?",
     "options": ["Red", "Blue", "Green", "Yellow"], "answer": "A"},
    {"id": "shapes-2", "video": "shapes.mp4", "question": "In which direction does the circle move?",
     "options": ["From right to left", "From left to right", "From bottom to top", "It does not move"],
     "answer": "B"},
    {"id": "shapes-3", "video": "shapes.mp4", "question": "What shape is the blue object?",
     "options": ["Circle", "Triangle", "Star", "Square"], "answer": "D"},
    {"id": "shapes-4", "video": "shapes.mp4", "question": "Describe what happens in the video.",
     "reference": "A red circle moves from the left to the right while a blue square moves from the top "
                  "to the bottom."},
    {"id": "bounce-1", "video": "bounce.mp4", "question": "What color is the bouncing ball?",
     "options": ["Green", "Yellow", "Red", "Blue"], "answer": "B"},
    {"id": "bounce-2", "video": "bounce.mp4", "question": "What happens to the green rectangle?",
     "options": ["It shrinks", "It disappears", "It grows", "It changes color"], "answer": "C"},
    {"id": "bounce-3", "video": "bounce.mp4", "question": "How many moving objects are there, and what are they?",
     "reference": "Two: a yellow ball that bounces and a green rectangle that grows."},
    {"id": "scene-1", "video": "scene.png", "question": "What color is the square?",
     "options": ["Red", "Blue", "Green", "Yellow"], "answer": "B"},
    {"id": "scene-2", "video": "scene.png", "question": "List the shapes in the picture and their colors.",
     "reference": "A red circle, a blue square, a yellow circle and a green rectangle."},
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    n, fps = 8 * 24, 24
    codec = write_clip(out / "shapes.mp4", (shapes_frame(i, n) for i in range(n)), fps, 320, 240)
    n, fps = 6 * 30, 30
    write_clip(out / "bounce.mp4", (bounce_frame(i, n, fps) for i in range(n)), fps, 448, 336)
    scene_image().save(out / "scene.png", optimize=True)
    with open(out / "questions.jsonl", "w", encoding="utf-8") as f:
        for q in QUESTIONS:
            f.write(json.dumps(q) + "\n")
    for name in ("shapes.mp4", "bounce.mp4", "scene.png", "questions.jsonl"):
        print(f"{name:16s} {(out / name).stat().st_size:>8d} bytes")
    print(f"video codec: {codec}")


if __name__ == "__main__":
    main()
