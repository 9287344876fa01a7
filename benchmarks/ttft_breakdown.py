"""Where the time to the first token goes after pruning: phases, slack against FLOPs, encoder reuse.

What it measures (ratios within one process; absolute times on a shared machine are noise):

* One model (default ``bench:qwen2_vl``: the built-in bench-size demo model, LM hidden 1024, 12 layers,
  built offline on first use), and per clip size (``--frames``, default 12 and 32 frames of
  ``samples/bounce.mp4``: about 1,200 and 3,000 visual tokens) the presets ``none``, ``1_3``, ``1_9``
  through the library's own ``Session.generate`` (one generated token), interleaved inside every repeat
  (none, 1_3, 1_9, none, ...) after one warm-up each. Medians over ``--repeat`` runs.
* For each preset the phases of ``timings.phases`` (``vitcop_cli.session.phases``): generate set-up,
  vision encoder, pre-LLM (embedding merge, position index, masks), LLM layers, pruning, first token.
* LLM prefill = ``timings.prefill_s`` (time to first token minus the vision encoder, pruning included).
  Measured ratio = median prefill(preset) / median prefill(none); predicted = the report's
  ``flops_ratio``; **slack = measured / predicted** (1.0: the speed-up the arithmetic promises).
  Overhead = median pruning time / median unpruned prefill.
* A static-content clip (``--static``: 16 frames of which the last 12 are one still frame; synthetic,
  ``vitcop_cli.synthetic``): encoder time and ``encoder_patches`` (total / encoded) under ``1_9``
  against ``none``, showing what encoding each distinct temporal patch once saves.

Targets (issue 18, CPU bench, vitcop, sdpa): slack <= 1.10 at N ~ 1,200 and <= 1.05 at N >= 3,000;
pruning overhead <= 2% of the unpruned prefill. Exit status 0 when they hold, 1 otherwise.

Run from the repository root::

    PYTHONPATH=. python benchmarks/ttft_breakdown.py                 # 8 and 32 frames, 5 repeats, static clip
    PYTHONPATH=. python benchmarks/ttft_breakdown.py --frames 8 --repeat 3 --json /tmp/ttft.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from vitcop_cli import api  # noqa: E402
from vitcop_cli.synthetic import synthetic_clip  # noqa: E402
from vitcop_cli.video import load_visual  # noqa: E402

PRESETS = ("none", "1_3", "1_9")
PHASES = ("generate_setup_s", "vision_encoder_s", "pre_llm_s", "llm_layers_s", "pruning_s", "first_token_s")
SLACK_TARGETS = ((3000, 1.05), (0, 1.10))  # (minimum N, slack bound): the first that N reaches applies
OVERHEAD_TARGET = 0.02


def still_clip(frames: int = 16, still: int = 12, size: tuple[int, int] = (448, 336)):
    """A synthetic clip whose last ``still`` frames repeat one frame (a static screen after some motion)."""
    visual = synthetic_clip(frames, *size)
    visual.frames[frames - still:] = visual.frames[frames - still]
    return visual


def measure(session, prepared, presets, repeat: int) -> dict:
    """{preset: [AskResult, ...]} of interleaved runs, after one warm-up each."""
    for preset in presets:
        session.generate(prepared, preset=preset, max_new_tokens=1)
    runs = {p: [] for p in presets}
    for _ in range(repeat):
        for preset in presets:
            runs[preset].append(session.generate(prepared, preset=preset, max_new_tokens=1))
    return runs


def median(results, get) -> float:
    return statistics.median(get(r) for r in results)


def clip_table(label: str, runs: dict) -> dict:
    base = runs["none"]
    base_prefill = median(base, lambda r: r.timings.prefill_s)
    n = base[0].pruning.n_visual
    print(f"\n== {label}: N = {n} visual tokens, prompt {base[0].tokens.prompt} tokens ==")
    head = ["preset", *(p.replace("_s", "") for p in PHASES), "prefill", "measured", "FLOPs", "slack", "overhead"]
    print("  ".join(f"{h:>12}" for h in head))
    out = {}
    for preset, results in runs.items():
        phases = {p: median(results, lambda r, p=p: getattr(r.timings.phases, p)) for p in PHASES}
        prefill = median(results, lambda r: r.timings.prefill_s)
        flops = results[0].pruning.flops_ratio
        measured = prefill / base_prefill
        row = {
            "phases_s": phases, "prefill_s": prefill, "measured_ratio": measured, "flops_ratio": flops,
            "slack": measured / flops, "overhead": phases["pruning_s"] / base_prefill,
            "encoder_patches": getattr(results[0].pruning, "encoder_patches", None),
        }
        out[preset] = row
        cells = [preset, *(f"{phases[p] * 1000:.1f}" for p in PHASES), f"{prefill * 1000:.1f}",
                 f"{measured:.3f}", f"{flops:.3f}", f"{row['slack']:.3f}", f"{row['overhead']:.2%}"]
        print("  ".join(f"{c:>12}" for c in cells))
    print("(phases and prefill in ms, medians; measured = prefill / prefill of none; slack = measured / FLOPs)")
    return {"n_visual": n, "rows": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bench:qwen2_vl", help="model (default: the bench-size demo Qwen2-VL)")
    ap.add_argument("--clip", type=Path, default=REPO / "samples" / "bounce.mp4")
    ap.add_argument("--frames", type=int, nargs="+", default=[12, 32], help="clip sizes (frames sampled; 12 and 32 give about 1,150 and 3,070 tokens)")
    ap.add_argument("--max-pixels", type=int, default=448 * 336, help="per-frame pixel cap (default 448x336)")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved runs per preset after one warm-up")
    ap.add_argument("--no-static", action="store_true", help="skip the static-content clip")
    ap.add_argument("--json", type=Path, default=None, help="also write every number to this JSON file")
    args = ap.parse_args(argv)

    api.quiet_library_logs()
    session = api.load(args.model, device="cpu", offline=True)
    print(f"model: {args.model} ({session.model_type}, {session.n_layers} LLM layers), {args.repeat} repeats")
    report, ok = {"model": args.model, "clips": {}}, True
    for frames in args.frames:
        prepared = session.prepare(load_visual(args.clip, frames=frames), "What happens in the video?",
                                   max_pixels=args.max_pixels)
        result = clip_table(f"{args.clip.name}, {frames} frames", measure(session, prepared, PRESETS, args.repeat))
        report["clips"][f"{frames} frames"] = result
        bound = next(b for n_min, b in SLACK_TARGETS if result["n_visual"] >= n_min)
        for preset in PRESETS[1:]:
            row = result["rows"][preset]
            ok &= row["slack"] <= bound and row["overhead"] <= OVERHEAD_TARGET
        print(f"targets: slack <= {bound}, overhead <= {OVERHEAD_TARGET:.0%}")
    if not args.no_static:
        prepared = session.prepare(still_clip(), "What happens in the video?", max_pixels=args.max_pixels)
        runs = measure(session, prepared, ("none", "1_9"), args.repeat)
        result = clip_table("static clip: 16 frames, the last 12 still", runs)
        enc = {p: median(r, lambda x: x.timings.vision_encoder_s) for p, r in runs.items()}
        print(f"vision encoder: none {enc['none'] * 1000:.1f} ms, 1_9 {enc['1_9'] * 1000:.1f} ms "
              f"(ratio {enc['1_9'] / enc['none']:.3f}); encoder_patches under 1_9: "
              f"{result['rows']['1_9']['encoder_patches']}")
        report["static"] = {**result, "vision_encoder_s": enc}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    print("\nall targets met" if ok else "\nsome targets missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
