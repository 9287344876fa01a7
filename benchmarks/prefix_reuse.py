"""Prune once, ask many: what reusing the pruned prefix saves (CPU benchmark; ratios within one run).

What it measures (bench models: random weights, real shapes; ``--family`` picks one, default Qwen2-VL):

1. **Follow-up questions** (``Session.open`` + ``PrunedClip.ask``): one clip of about 3,000 visual tokens
   (``--frames 32`` of a 448x336 clip at ``--max-pixels`` 448x336: 16 temporal patches x 192 tokens = 3,072
   on Qwen2-VL) at ``--preset`` (1_9). The
   first question's time to first token (``timings.ttft_s``: question start to first token, decode, preprocess,
   encoder and the prefix prefill included) against the second's (its own prompt and question prefill only).
   Target: second <= 10% of first. Medians over ``--repeat`` fresh opens.
2. **batch**: 3 questions on each of 4 clips (12 lines) through ``run_batch``, with prefix reuse (each clip's
   prefix prefilled once) against ``reuse_prefixes=False`` (today's behaviour: every line re-runs the processor,
   the encoder and the whole prefill; consecutive lines still share the decoded clip). Target: reuse <= 45% of
   today's wall time. The two runs alternate ``--repeat`` times; medians.
3. **Memory**: the prefix's bytes (``prefix.bytes``: the survivors' KV) against the unpruned prefix's
   (``prefix.bytes_unpruned``), at the preset and at ``none``.

The clips are written once with PyAV (moving squares over a gradient with noise, H.264, seeds 0-3) into the
cache folder. Run from the repository root::

    PYTHONPATH=. python benchmarks/prefix_reuse.py                 # bench:qwen2_vl, 32 frames, 1_9
    PYTHONPATH=. python benchmarks/prefix_reuse.py --family qwen3_5 --frames 44 --json /tmp/prefix.json

Exit status 0 when both targets are met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

QUESTIONS = ("What happens in the video?", "Which colours do the shapes have?", "How many shapes move?")


def write_clip(path: Path, seed: int, frames: int = 64, width: int = 448, height: int = 336) -> Path:
    """An H.264 clip of ``frames`` frames at 16 fps (vitcop's synthetic scene, one seed per clip)."""
    import av

    from vitcop_cli.media.synthetic import synthetic_clip

    if path.exists():
        return path
    pixels = synthetic_clip(frames, width, height, seed=seed).frames.numpy()
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for rgb in pixels:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)
    return path


def follow_ups(session, clip: Path, args) -> dict:
    firsts, seconds, saved = [], [], []
    for _ in range(args.repeat):
        opened = session.open(clip, preset=args.preset, frames=args.frames, max_pixels=args.max_pixels)
        a = opened.ask(QUESTIONS[0], max_new_tokens=args.max_new_tokens)
        b = opened.ask(QUESTIONS[1], max_new_tokens=args.max_new_tokens)
        assert not a.prefix.reused and b.prefix.reused
        firsts.append(a.timings.ttft_s)
        seconds.append(b.timings.ttft_s)
        saved.append(b.prefix.saved_s)
    first, second = statistics.median(firsts), statistics.median(seconds)
    return {"visual_tokens": a.tokens.visual, "first_ttft_s": first, "second_ttft_s": second,
            "ratio": second / first, "saved_s": statistics.median(saved), "prefix_bytes": b.prefix.bytes,
            "prefix_bytes_unpruned": b.prefix.bytes_unpruned, "prefix_tokens": b.prefix.tokens}


def batch_runs(session, clips: list[Path], args, folder: Path) -> dict:
    from vitcop_cli.batch import items_from_jsonl, run_batch

    lines = folder / "items.jsonl"
    lines.write_text("".join(json.dumps({"id": f"{c.stem}-{i}", "video": str(c), "question": q}) + "\n"
                             for c in clips for i, q in enumerate(QUESTIONS)))
    times = {True: [], False: []}
    reuses = None
    for r in range(args.repeat):
        for reuse in (False, True) if r % 2 == 0 else (True, False):
            out = folder / f"out-{reuse}-{r}.jsonl"
            started = time.perf_counter()
            summary = run_batch(session, items_from_jsonl(lines), out, presets=[args.preset], frames=args.frames,
                                max_pixels=args.max_pixels, max_new_tokens=args.max_new_tokens, reuse_prefixes=reuse)
            times[reuse].append(time.perf_counter() - started)
            if reuse:
                reuses = summary.prefix_reuses
    with_reuse, today = statistics.median(times[True]), statistics.median(times[False])
    return {"lines": len(clips) * len(QUESTIONS), "today_s": today, "reuse_s": with_reuse,
            "ratio": with_reuse / today, "prefix_reuses": reuses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="qwen2_vl")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--max-pixels", type=int, default=448 * 336)
    parser.add_argument("--preset", default="1_9")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=4, help="answer length (4: a multiple-choice letter "
                        "and its bracket, as Video-MME / MLVU answers)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clips", type=Path, default=Path.home() / ".cache" / "vitcop" / "bench-clips" / "prefix-reuse")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    from vitcop_cli import api

    torch.set_num_threads(args.threads)
    api.quiet_library_logs()
    session = api.load(f"bench:{args.family}", device="cpu", offline=True)
    folder = args.clips
    folder.mkdir(parents=True, exist_ok=True)
    clips = [write_clip(folder / f"scene-{seed}.mp4", seed) for seed in range(4)]
    session.ask(clips[0], "warm up", frames=4, max_new_tokens=1, preset=args.preset)

    follow = follow_ups(session, clips[0], args)
    none = session.open(clips[0], preset="none", frames=args.frames, max_pixels=args.max_pixels)
    none = none.ask(QUESTIONS[0], max_new_tokens=1).prefix
    with tempfile.TemporaryDirectory() as tmp:
        batch = batch_runs(session, clips, args, Path(tmp))
    figures = {"model": f"bench:{args.family}", "preset": args.preset, "frames": args.frames,
               "follow_up": follow, "batch": batch, "none_prefix_bytes": none.bytes}

    print(f"bench:{args.family}, {args.frames} frames -> {follow['visual_tokens']:,} visual tokens, preset {args.preset}")
    print(f"follow-up ttft: first {follow['first_ttft_s']:.3f} s, second {follow['second_ttft_s']:.3f} s "
          f"-> {100 * follow['ratio']:.1f}% of the first (target <= 10%); saved {follow['saved_s']:.3f} s")
    print(f"batch, {batch['lines']} lines on 4 clips: today {batch['today_s']:.2f} s, with reuse {batch['reuse_s']:.2f} s "
          f"-> {100 * batch['ratio']:.1f}% (target <= 45%); {batch['prefix_reuses']} reuses")
    print(f"prefix: {follow['prefix_tokens']} tokens, {follow['prefix_bytes'] / 2**20:.2f} MiB at {args.preset} against "
          f"{follow['prefix_bytes_unpruned'] / 2**20:.2f} MiB unpruned "
          f"({follow['prefix_bytes'] / follow['prefix_bytes_unpruned']:.3f}x); at none {none.bytes / 2**20:.2f} MiB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if follow["ratio"] <= 0.10 and batch["ratio"] <= 0.45 else 1


if __name__ == "__main__":
    sys.exit(main())
