"""``vitcop batch`` scaling: items per second, 1 rank x T threads vs N ranks under torchrun; merge cost.

Not a test. Two measurements, printed as a table (and ``--json``):

1. Throughput. The same folder of clips (copies of ``samples/``) through ``vitcop batch`` once as
   one process with all the cores (``OMP_NUM_THREADS`` = cores) and once per ``--nproc`` value as
   N ranks (``vitcop batch --nproc N``: cores / N threads each on CPU, one GPU each on CUDA).
   Reported: results per second over the batch itself (``wall_s`` of the summary: after the model
   loaded, until the merge is done) and the whole command's wall time (start-up and loading
   included). Each run writes a fresh ``--out``.
2. Merge. :func:`vitcop_cli.batch.merge.merge` on ``--lines`` synthetic result lines shaped like
   real ones (about 1.3 KB each: timestamps, token ids), split as an existing ``--out`` (half) and
   two part files (a quarter each); then the common end of a resumed run: the full file plus one
   new line. Seconds and MB/s.

Usage::

    python benchmarks/batch_scaling.py --model /tmp/vitcop-test-models/qwen2_vl-tiny --clips 16
    python benchmarks/batch_scaling.py --model Qwen/Qwen2-VL-2B-Instruct --nproc 8 --clips 256  # 8 GPUs
    python benchmarks/batch_scaling.py --merge-only --lines 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_folder(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sources = [SAMPLES / "shapes.mp4", SAMPLES / "bounce.mp4", SAMPLES / "scene.png"]
    for i in range(n):
        src = sources[i % len(sources)]
        shutil.copy(src, folder / f"clip{i:05d}{src.suffix}")


def run_batch(args, folder: Path, out: Path, nproc: int | None) -> dict:
    cmd = [sys.executable, "-m", "vitcop_cli", "batch", str(folder), "-q", "What happens?", "-o", str(out),
           "-m", args.model, "--frames", str(args.frames), "--max-new-tokens", str(args.max_new_tokens),
           "-p", args.preset, "--json"]
    if args.offline:
        cmd.append("--offline")
    env = dict(os.environ, NO_COLOR="1")
    if nproc is None:
        env["OMP_NUM_THREADS"] = str(cores())
    else:
        cmd += ["--nproc", str(nproc)]
        env.pop("OMP_NUM_THREADS", None)  # the launcher sets cores / N
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"batch failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    summary = json.loads(proc.stdout)
    done = summary["ok"] + summary["failed"]
    return {
        "ranks": summary["ranks"],
        "threads_per_rank": cores() if nproc is None else max(1, cores() // nproc),
        "results": done,
        "batch_s": round(summary["wall_s"], 3),
        "results_per_s": round(done / summary["wall_s"], 3) if summary["wall_s"] else None,
        "command_s": round(wall, 2),
    }


def synthetic_line(i: int) -> dict:
    return {
        "id": f"clip{i:06d}.mp4", "video": f"/data/clips/clip{i:06d}.mp4", "question": "What happens?",
        "prompt": "What happens?", "options": None, "expected": None, "schema": "vitcop.ask/2",
        "answer": "A red circle moves from left to right.", "model": "/models/qwen2-vl-2b", "model_type": "qwen2_vl",
        "preset": "1_9", "method": "vitcop", "device": "cuda:0", "dtype": "bfloat16", "attn_implementation": "sdpa",
        "visual": {"path": f"/data/clips/clip{i:06d}.mp4", "kind": "video", "frames": 16, "sampling_fps": 2.0,
                   "timestamps": [round(k * 0.5, 4) for k in range(16)], "width": 640, "height": 360},
        "tokens": {"prompt": 1200, "visual": 1152, "generated": 12},
        "timings": {"total_s": 0.81, "prefill_s": 0.3, "decode_s": 0.4},
        "pruning": {"layer_averaged_visual": 128.0, "layer_averaged_ratio": 0.111},
        "generated_ids": list(range(151600, 151612)), "warnings": [], "seed": None,
        "predicted": None, "correct": None, "error": None,
    }


def bench_merge(lines: int) -> dict:
    from vitcop_cli.batch.merge import merge, part_path

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.jsonl"
        encoded = [(json.dumps(synthetic_line(i)) + "\n").encode() for i in range(lines)]
        half, quarter = lines // 2, lines // 4
        out.write_bytes(b"".join(encoded[:half]))
        part_path(out, 0).write_bytes(b"".join(encoded[half:half + quarter]))
        part_path(out, 1).write_bytes(b"".join(encoded[half + quarter:]))
        size_mb = sum(len(x) for x in encoded) / 1e6
        t0 = time.perf_counter()
        res = merge(out)
        parts_s = time.perf_counter() - t0
        assert res.written and len(res.rows) == lines
        part_path(out, 0).write_bytes((json.dumps(synthetic_line(lines)) + "\n").encode())
        t0 = time.perf_counter()
        merge(out)
        one_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        noop = merge(out)
        noop_s = time.perf_counter() - t0
        assert not noop.written
    return {"lines": lines, "mb": round(size_mb, 1), "merge_parts_s": round(parts_s, 2),
            "mb_per_s": round(size_mb / parts_s, 1), "merge_one_new_line_s": round(one_s, 2),
            "nothing_to_merge_s": round(noop_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.environ.get("VITCOP_MODEL", "/tmp/vitcop-test-models/qwen2_vl-tiny"))
    ap.add_argument("--offline", action="store_true", default=True)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--preset", default="1_3")
    ap.add_argument("--nproc", type=int, nargs="+", default=[2], help="rank counts to compare with one process")
    ap.add_argument("--lines", type=int, default=100_000, help="result lines for the merge benchmark")
    ap.add_argument("--merge-only", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    report: dict = {"cores": cores(), "throughput": [], "merge": None}
    if not args.merge_only:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "clips"
            make_folder(folder, args.clips)
            for nproc in [None, *args.nproc]:
                out = Path(tmp) / f"out-{nproc or 1}.jsonl"
                report["throughput"].append(run_batch(args, folder, out, nproc))
    report["merge"] = bench_merge(args.lines)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"cores: {report['cores']}  model: {args.model}  clips: {args.clips}  frames: {args.frames}")
    if report["throughput"]:
        print(f"{'ranks x threads':>16} {'results':>8} {'batch s':>8} {'results/s':>10} {'command s':>10}")
        for r in report["throughput"]:
            shape = f"{r['ranks']} x {r['threads_per_rank']}"
            print(f"{shape:>16} {r['results']:>8} {r['batch_s']:>8} {r['results_per_s']:>10} {r['command_s']:>10}")
    m = report["merge"]
    print(f"merge {m['lines']} lines ({m['mb']} MB, out + 2 parts): {m['merge_parts_s']} s ({m['mb_per_s']} MB/s); "
          f"full file + 1 new line: {m['merge_one_new_line_s']} s; nothing to merge: {m['nothing_to_merge_s']} s")


if __name__ == "__main__":
    main()
