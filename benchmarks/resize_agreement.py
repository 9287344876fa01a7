"""What ``--resize fast`` changes against ``--resize exact`` (the reference preprocessing), measured.

Per clip (the two sample clips and a natural-looking synthetic one, 1280x720 H.264 made with PyAV) and model
family (the demo models, whose processors are the families' own):

* frames: mean / max absolute difference of the uint8 frames the processor receives (fast: scaled by the
  decoder; exact: the processor's own resize), in 0-255 pixel levels;
* grid: whether the visual-token grid (and so every prompt token) is the same;
* answers: whether the greedy answer tokens are the same (``--max-new-tokens`` tokens, preset 1_9), on the
  ``bench`` demo models (built offline on first use; ``--size tiny`` for a quick look).

Run from the repository root::

    PYTHONPATH=. python benchmarks/resize_agreement.py               # bench models, 16 frames
    PYTHONPATH=. python benchmarks/resize_agreement.py --size tiny --frames 8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "llava_onevision")


def natural_clip(path: Path, width: int = 1280, height: int = 720, frames: int = 48) -> Path:
    """Moving gradients, a scrolling texture, moving shapes and noise: decodes like camera footage."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.stack([
                110 + 70 * np.sin(x / width * 9 + i * 0.2) * np.cos(y / height * 5 - i * 0.1),
                100 + 60 * np.sin((x + y) / (width + height) * 13 - i * 0.15),
                120 + 50 * np.cos(y / height * 11 + i * 0.3) + 20 * np.sin((x - 9 * i) / 5),
            ], -1)
            img[200:320, 100 + 12 * i:260 + 12 * i] = (240, 40, 40)
            img += rng.normal(0, 6, img.shape)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img.clip(0, 255).astype(np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def compare(session, clip: Path, frames: int, max_new_tokens: int) -> dict:
    import torch

    exact = session.load_visual(clip, frames=frames, resize="exact")
    fast = session.load_visual(clip, frames=frames, resize="fast")
    diff = (exact.frames.to(torch.int16) - fast.frames.to(torch.int16)).abs()
    p_exact, p_fast = session.prepare(exact, "What happens in the video?"), session.prepare(fast, "What happens in the video?")
    grid = next((k for k in ("video_grid_thw", "pixel_values_videos") if k in p_exact.inputs), None)
    same_grid = (torch.equal(p_exact.inputs["input_ids"], p_fast.inputs["input_ids"])
                 and p_exact.inputs[grid].shape == p_fast.inputs[grid].shape)
    a = session.generate(p_exact, preset="1_9", max_new_tokens=max_new_tokens).generated_ids
    b = session.generate(p_fast, preset="1_9", max_new_tokens=max_new_tokens).generated_ids
    return {"size": list(exact.frames.shape[1:3]), "mean_abs": float(diff.float().mean()), "max_abs": int(diff.max()),
            "same_grid": bool(same_grid), "same_answer": a == b,
            "agreeing_tokens": sum(x == y for x, y in zip(a, b)), "tokens": len(a)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("tiny", "bench"), default="bench")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from vitcop_cli import api

    api.quiet_library_logs()
    with tempfile.TemporaryDirectory() as tmp:
        clips = {"shapes.mp4": ROOT / "samples" / "shapes.mp4", "bounce.mp4": ROOT / "samples" / "bounce.mp4",
                 "natural 720p": natural_clip(Path(tmp) / "natural.mp4")}
        rows = []
        print(f"{'family':16} {'clip':13} {'frame size':>10} {'mean |d|':>9} {'max |d|':>8} {'grid':>5} {'answer':>8}")
        for family in args.families.split(","):
            session = api.load(f"{args.size}:{family}", device="cpu")
            for name, clip in clips.items():
                r = {"family": family, "clip": name, **compare(session, clip, args.frames, args.max_new_tokens)}
                rows.append(r)
                answer = "same" if r["same_answer"] else f"{r['agreeing_tokens']}/{r['tokens']}"
                print(f"{family:16} {name:13} {'x'.join(map(str, r['size'])):>10} {r['mean_abs']:9.2f} "
                      f"{r['max_abs']:8d} {'same' if r['same_grid'] else 'DIFF':>5} {answer:>8}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
