"""Prefill time ratios of ViTCoP presets against the ratios their FLOPs predict (CPU benchmark).

What it measures (see ``benchmarks/README.md``):

* A mid-size random-weight Qwen2-VL (``vitcop_cli.devmodels`` size ``bench``: LM hidden 1024,
  12 layers, 16 heads / 2 KV heads, MLP 2816), built once into a cache folder.
* One clip (default ``samples/bounce.mp4``, 448x336, 32 frames -> 16 temporal patches x 192 tokens
  = 3072 visual tokens), decoded and prepared once.
* Per preset (``none``, ``1_3``, ``2_9``, ``1_9``): one forward pass
  ``model(**inputs, use_cache=True, logits_to_keep=1)`` under ``torch.inference_mode()``.
  The vision encoder (identical work for every preset) is timed with hooks and subtracted:
  **LLM prefill = forward - vision encoder**. Presets are interleaved inside every repeat
  (none, 1_3, 2_9, 1_9, none, ...) so slow machine drift does not favour one; each preset is
  warmed up once first. Medians over ``--repeat`` runs, with min-max.
* Measured ratio = median LLM prefill(preset) / median LLM prefill(none); predicted ratio =
  ``handle.report(input_ids).flops_ratio`` (LLM prefill FLOPs from the real shapes).
* Pruning overhead = wall time inside pruning work, as a percentage of the median unpruned LLM
  prefill. Two parts are timed: ``handle.seconds`` (Stage I cut + VIC at the LLM's door,
  Stage II / III and the gathers in the decoder-layer hooks) and the Stage-I *capture* that runs
  inside the vision encoder (pseudo-CLS saliency and key features on the last vision block's qkv;
  timed by bracketing the adapter's hook with two of our own). The target is judged on the sum.

Targets (from the issue): measured ratio <= 1.15x the FLOPs-predicted ratio at every preset
(and, symmetrically, >= predicted / 1.15), pruning overhead <= 3% of the unpruned LLM prefill.

Run from the repository root::

    PYTHONPATH=. python benchmarks/prefill_ratios.py              # defaults: 32 frames, 5 repeats
    PYTHONPATH=. python benchmarks/prefill_ratios.py --json out.json --repeat 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # allow ``python benchmarks/prefill_ratios.py`` without PYTHONPATH
    sys.path.insert(0, str(REPO))

import pruning  # noqa: E402
from vitcop_cli import api  # noqa: E402
from vitcop_cli.devmodels import make_model  # noqa: E402
from vitcop_cli.video import load_visual  # noqa: E402

PRESETS = ("none", "1_3", "2_9", "1_9")
RATIO_TOLERANCE = 1.15  # measured / predicted must lie in [1/1.15, 1.15]
OVERHEAD_TARGET = 0.03  # pruning overhead <= 3% of unpruned LLM prefill
DEFAULT_MODEL = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vitcop" / "bench-qwen2_vl"
QUESTION = "What happens in the video? Describe the motion of every object."


# ---- setup -------------------------------------------------------------------------------
def ensure_model(path: Path) -> tuple[Path, bool]:
    """Build the random ``bench`` Qwen2-VL into ``path`` unless a built one is already there."""
    marker = path / "vitcop_devmodel.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("family") != "qwen2_vl" or info.get("size") != "bench":
            raise SystemExit(f"{path} holds a {info.get('family')}/{info.get('size')} dev model, not qwen2_vl/bench")
        return path, False
    if (path / "config.json").exists():  # a user-supplied checkpoint: use it as it is
        return path, False
    make_model("qwen2_vl", path, size="bench")
    return path, True


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "torch_threads": threads,
        "torch_interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


class Timers:
    """Hooks that time the vision encoder and the adapter's Stage-I capture hook of one model.

    The vision-encoder pre / post hooks are registered once, before any preset is attached.
    The capture bracket: a forward hook on the last vision block's ``qkv`` registered *before*
    ``attach`` (runs first) and one registered *after* it (runs last); the gap is the adapter's
    capture hook. With ``none`` nothing is attached and the gap is ~0.
    """

    def __init__(self, session):
        self.adapter = session.adapter
        self.vision_s = 0.0
        self.capture_s = 0.0
        self._t_vision = self._t_cap = None
        enc = self.adapter.vision_encoder
        self._qkv = enc.blocks[-1].attn.qkv if hasattr(enc, "blocks") else None
        self._handles = [
            enc.register_forward_pre_hook(self._vision_start),
            enc.register_forward_hook(self._vision_end),
        ]
        if self._qkv is not None:
            self._handles.append(self._qkv.register_forward_hook(self._cap_start))
        self._late = None

    def _vision_start(self, *_):
        self._t_vision = time.perf_counter()

    def _vision_end(self, *_):
        self.vision_s += time.perf_counter() - self._t_vision

    def _cap_start(self, *_):
        self._t_cap = time.perf_counter()

    def _cap_end(self, *_):
        self.capture_s += time.perf_counter() - self._t_cap

    def after_attach(self):
        """Register the closing capture hook after the preset's hooks (so it runs after them)."""
        if self._qkv is not None:
            self._late = self._qkv.register_forward_hook(self._cap_end)

    def before_detach(self):
        if self._late is not None:
            self._late.remove()
            self._late = None

    def reset(self):
        self.vision_s = self.capture_s = 0.0

    def remove(self):
        self.before_detach()
        for h in self._handles:
            h.remove()


def one_prefill(session, inputs: dict, preset: str, timers: Timers) -> dict:
    """One timed prefill with ``preset`` attached; returns its timings and the pruning report."""
    model = session.model
    timers.reset()
    with pruning.attach(model, preset) as handle:
        timers.after_attach()
        try:
            handle.bind(inputs)
            with torch.inference_mode():
                started = time.perf_counter()
                out = model(**inputs, use_cache=True, logits_to_keep=1)
                forward_s = time.perf_counter() - started
            report = handle.report(inputs["input_ids"])
            pruning_s = handle.seconds
        finally:
            timers.before_detach()
    del out
    return {
        "forward_s": forward_s,
        "vision_s": timers.vision_s,
        "llm_s": forward_s - timers.vision_s,
        "hook_s": pruning_s,
        "capture_s": timers.capture_s,
        "report": report,
    }


# ---- statistics / printing ---------------------------------------------------------------
def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def fmt_s(x: float) -> str:
    return f"{x:.3f}"


def print_table(headers: list[str], rows: list[list[str]], out=sys.stdout) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths))
    print(line, file=out)
    print("-" * len(line), file=out)
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)), file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                    help=f"bench model folder (built here if missing; default {DEFAULT_MODEL})")
    ap.add_argument("--clip", type=Path, default=REPO / "samples" / "bounce.mp4")
    ap.add_argument("--frames", type=int, default=32, help="frames sampled from the clip (2 frames = 1 temporal patch)")
    ap.add_argument("--max-pixels", type=int, default=448 * 336,
                    help="per-frame pixel cap (default 448*336: bounce.mp4 at full size, 192 tokens per temporal patch)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per preset (after one warm-up each)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), help="presets to time ('none' is always included)")
    ap.add_argument("--min-visual", type=int, default=3000,
                    help="refuse to run with fewer visual tokens than this (0 disables; the issue asks >= 3000)")
    ap.add_argument("--json", type=Path, default=None, help="also write every number to this JSON file")
    args = ap.parse_args(argv)

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    presets = ["none"] + [p for p in args.presets if p != "none"]
    machine = machine_info(torch.get_num_threads())
    print(f"machine: {machine['cpu']}; {machine['logical_cores']} logical cores; torch {machine['torch']} "
          f"with {machine['torch_threads']} intra-op / {machine['torch_interop_threads']} inter-op threads; "
          f"transformers {machine['transformers']}")

    t0 = time.perf_counter()
    model_path, built = ensure_model(args.model.expanduser())
    print(f"model: {model_path} ({'built now' if built else 'cached'}, {time.perf_counter() - t0:.1f}s)")
    api.quiet_library_logs()
    session = api.load(str(model_path), device="cpu", offline=True)
    shape = session.adapter.lm_shape()
    print(f"LLM: hidden {shape.hidden}, {shape.layers} layers, {shape.heads} heads / {shape.kv_heads} KV heads, "
          f"MLP {shape.intermediate}; dtype {str(session.dtype).replace('torch.', '')}, "
          f"attention {session.attn_implementation}")

    visual = load_visual(args.clip, frames=args.frames)
    prepared = session.prepare(visual, QUESTION, max_pixels=args.max_pixels)
    inputs = prepared.inputs
    n_visual = int(session.adapter.visual_mask(inputs["input_ids"]).sum())
    grid = inputs.get("video_grid_thw", inputs.get("image_grid_thw"))
    print(f"clip: {args.clip.name}, {len(visual.timestamps)} frames of {visual.width}x{visual.height}; "
          f"grid_thw {grid[0].tolist() if grid is not None else '?'}; prompt {inputs['input_ids'].shape[1]} tokens, "
          f"N = {n_visual} visual tokens")
    if args.min_visual and n_visual < args.min_visual:
        raise SystemExit(f"only {n_visual} visual tokens (< {args.min_visual}); raise --frames / --max-pixels "
                         "or pass --min-visual 0")

    timers = Timers(session)
    runs: dict[str, list[dict]] = {p: [] for p in presets}
    print(f"warm-up: one prefill per preset ({', '.join(presets)}) ...", flush=True)
    for p in presets:
        r = one_prefill(session, inputs, p, timers)
        print(f"  {p:>5}: forward {r['forward_s']:.2f}s", flush=True)
    for i in range(args.repeat):
        parts = []
        for p in presets:
            r = one_prefill(session, inputs, p, timers)
            runs[p].append(r)
            parts.append(f"{p} {r['llm_s']:.2f}s")
        print(f"repeat {i + 1}/{args.repeat}: LLM prefill " + ", ".join(parts), flush=True)
    timers.remove()

    base = summary([r["llm_s"] for r in runs["none"]])
    base_med = base["median"]
    vision = summary([r["vision_s"] for p in presets for r in runs[p]])
    print(f"\nvision encoder (all presets, incl. Stage-I capture where attached): median {vision['median']:.3f}s "
          f"[{vision['min']:.3f}-{vision['max']:.3f}]")
    print(f"unpruned LLM prefill: median {base_med:.3f}s [{base['min']:.3f}-{base['max']:.3f}]\n")

    results = []
    for p in presets:
        rep = runs[p][-1]["report"]
        llm = summary([r["llm_s"] for r in runs[p]])
        hook = summary([r["hook_s"] for r in runs[p]])
        cap = summary([r["capture_s"] for r in runs[p]])
        total = summary([r["hook_s"] + r["capture_s"] for r in runs[p]])
        measured = llm["median"] / base_med
        predicted = rep.flops_ratio
        net = (llm["median"] - hook["median"]) / base_med  # LLM time without handle.seconds
        overhead_pct = 100 * total["median"] / base_med
        rel = measured / predicted
        ratio_ok = 1 / RATIO_TOLERANCE <= rel <= RATIO_TOLERANCE
        overhead_ok = total["median"] <= OVERHEAD_TARGET * base_med
        results.append({
            "preset": p,
            "N": rep.n_visual, "V": rep.after_stage1, "Rs": rep.after_stage2, "Rd": rep.after_stage3,
            "shallow_layer": rep.shallow_layer, "deep_layer": rep.deep_layer,
            "layer_averaged_ratio": rep.layer_averaged_ratio,
            "kv_cache_lengths": rep.kv_cache_lengths,
            "prefill_flops": rep.prefill_flops, "prefill_flops_unpruned": rep.prefill_flops_unpruned,
            "flops_ratio": predicted,
            "llm_prefill_s": llm, "forward_s": summary([r["forward_s"] for r in runs[p]]),
            "vision_s": summary([r["vision_s"] for r in runs[p]]),
            "measured_ratio": measured, "measured_over_predicted": rel,
            "measured_ratio_without_hooks": net,
            "pruning_hook_s": hook, "stage1_capture_s": cap, "pruning_overhead_s": total,
            "pruning_overhead_pct": overhead_pct,
            "pruning_hook_pct": 100 * hook["median"] / base_med,
            "ratio_ok": ratio_ok, "overhead_ok": overhead_ok,
        })

    headers = ["preset", "N", "V", "Rs", "Rd", "layer-avg", "FLOPs", "LLM s (min-max)", "measured",
               "meas/pred", "w/o hooks", "hook ms", "capture ms", "overhead %", "ratio", "overhead"]
    rows = []
    for r in results:
        llm = r["llm_prefill_s"]
        rows.append([
            r["preset"], str(r["N"]), str(r["V"]), str(r["Rs"]), str(r["Rd"]),
            f"{r['layer_averaged_ratio']:.3f}", f"{r['flops_ratio']:.3f}",
            f"{llm['median']:.3f} ({llm['min']:.2f}-{llm['max']:.2f})",
            f"{r['measured_ratio']:.3f}", f"{r['measured_over_predicted']:.3f}",
            f"{r['measured_ratio_without_hooks']:.3f}",
            f"{1000 * r['pruning_hook_s']['median']:.1f}", f"{1000 * r['stage1_capture_s']['median']:.1f}",
            f"{r['pruning_overhead_pct']:.2f}",
            "PASS" if r["ratio_ok"] else "FAIL", "PASS" if r["overhead_ok"] else "FAIL",
        ])
    print_table(headers, rows)
    print(f"\nlayer-avg = layer-averaged visual tokens / N; FLOPs = predicted LLM prefill ratio (report.flops_ratio); "
          f"measured = median LLM prefill / median unpruned ({args.repeat} runs each);\n"
          f"w/o hooks = (median LLM prefill - median handle.seconds) / unpruned; hook = handle.seconds; "
          f"capture = Stage-I capture inside the vision encoder;\n"
          f"overhead % = (hook + capture) / unpruned LLM prefill. Targets: meas/pred within "
          f"[1/{RATIO_TOLERANCE}, {RATIO_TOLERANCE}], overhead <= {100 * OVERHEAD_TARGET:.0f}%.")
    ok = all(r["ratio_ok"] and r["overhead_ok"] for r in results)
    print(f"overall: {'PASS' if ok else 'FAIL'}")

    if args.json:
        payload = {
            "machine": machine,
            "model": str(model_path),
            "lm_shape": shape.__dict__,
            "clip": str(args.clip), "frames": len(visual.timestamps),
            "grid_thw": grid[0].tolist() if grid is not None else None,
            "prompt_tokens": int(inputs["input_ids"].shape[1]), "n_visual": n_visual,
            "repeat": args.repeat,
            "vision_encoder_s": vision, "unpruned_llm_prefill_s": base,
            "targets": {"ratio_tolerance": RATIO_TOLERANCE, "overhead_fraction": OVERHEAD_TARGET},
            "results": results, "pass": ok,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
