"""CPU smoke test of ``benchmarks/gpu_suite.py`` (the one-command performance table), plus its arithmetic.

The script runs as a user runs it (a subprocess), with small settings: every method, the table, the
target lines, ``--json`` / ``--csv``. Timings are never asserted; structure and counts are.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_suite.py"
METHODS = ["vitcop", "evs", "fastv", "divprune"]


def _run(tmp_path, *args, timeout=240):
    out_json, out_csv = tmp_path / "suite.json", tmp_path / "suite.csv"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--repeat", "1", "--warmup", "0", "--decode-tokens", "3",
         "--json", str(out_json), "--csv", str(out_csv)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )
    return proc, out_json, out_csv


@pytest.mark.parametrize("family, shape, presets, frames, size", [
    ("qwen2_vl", "bench", ["1_9"], 4, "112x112"),        # the shape the CI smoke run names
    ("llava_onevision", "tiny", ["1_3", "2_9", "1_9"], 2, "224x224"),
    ("qwen3_5", "tiny", ["1_9"], 4, "112x112"),  # the hybrid family: a JSON with its layer types
])
def test_suite_runs_every_method_on_cpu(tmp_path, family, shape, presets, frames, size):
    proc, out_json, out_csv = _run(tmp_path, "--family", family, "--shape", shape, "--frames", str(frames),
                                   "--clip-size", size, "--presets", ",".join(presets), "--device", "cpu")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out_json.read_text())
    assert data["shape"] == shape and data["family"] == family and data["attn"] == ["sdpa"]
    rows = {(r["method"], r["preset"]): r for r in data["rows"]}
    assert set(rows) == {("none", "none")} | {(m, p) for m in METHODS for p in presets}
    for (method, preset), r in rows.items():
        assert r["error"] is None and r["runs"] == 1
        assert r["generated_tokens"] == 3  # min_new_tokens: a random model never stops early
        assert r["prefill_speedup"] > 0 and r["ttft_speedup"] > 0 and r["decode_ratio"] > 0
        assert r["peak_allocated_bytes"] is None and r["prefill_memory_ratio"] is None  # CPU: not measured
        if method == "none":
            assert r["flops_ratio"] == 1.0 and r["prefill_speedup"] == 1.0
        else:
            assert r["flops_ratio"] < 1.0 and r["layer_averaged_ratio"] < 1.0
            assert r["slack"] == pytest.approx(r["measured_prefill_ratio"] / r["flops_ratio"])
        if method == "vitcop":  # the slack split by the survivors-only reference, timed every round
            assert r["reference_s"] > 0 and r["kernel_slack"] * r["vitcop_slack"] == pytest.approx(r["slack"])
        else:
            assert r["kernel_slack"] is None and r["vitcop_slack"] is None
    statuses = {t["target"]: t["status"] for t in data["targets"]}
    assert statuses["prefill_memory_ratio"] == "N/A"
    assert {statuses[k] for k in ("prefill_speedup", "ttft_speedup", "slack")} <= {"PASS", "FAIL"}
    with open(out_csv, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    for line in ("prefill x", "TTFT x", "targets (vitcop at 1_9 vs none):", "prefill_speedup >= 8.0"):
        assert line in proc.stdout


def test_bad_arguments_exit_2_with_one_line(tmp_path):
    proc, _, _ = _run(tmp_path, "--methods", "vitcop,bogus", "--device", "cpu")
    assert proc.returncode == 2 and "unknown pruning method 'bogus'" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- in-process: arguments, failures and the arithmetic ---------------------------------
@pytest.fixture(scope="module")
def suite():
    sys.path.insert(0, str(ROOT))
    from benchmarks import gpu_suite

    return gpu_suite


@pytest.mark.parametrize("args, message", [
    (["--family", "qwen2_vl", "--frames", "5"], "even"),
    (["--clip-size", "640by360"], "WIDTHxHEIGHT"),
    (["--presets", "1_9,nope"], "nope"),
    (["--repeat", "0"], "--repeat"),
])
def test_bad_arguments_in_process(suite, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        suite.parse_args(args)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_7b_refuses_a_cpu(suite):
    args = suite.parse_args(["--shape", "7b", "--device", "cpu"])
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        suite.resolve(args)


def test_a_failing_method_is_reported_and_exits_1(suite, monkeypatch, capsys, tmp_path):
    real = suite.one_run

    def flaky(session, prepared, method, preset, decode_tokens):
        if method == "fastv":
            raise RuntimeError("pruning was not applied as planned\nsecond line")
        return real(session, prepared, method, preset, decode_tokens)

    monkeypatch.setattr(suite, "one_run", flaky)
    code = suite.main(["--shape", "tiny", "--frames", "2", "--clip-size", "56x56", "--presets", "1_9",
                       "--methods", "vitcop,fastv", "--repeat", "1", "--warmup", "0", "--decode-tokens", "2",
                       "--device", "cpu", "--json", str(tmp_path / "s.json")])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED: RuntimeError: pruning was not applied as planned" in out and "second line" not in out
    rows = {(r["method"], r["preset"]): r for r in json.loads((tmp_path / "s.json").read_text())["rows"]}
    assert rows[("fastv", "1_9")]["error"].startswith("RuntimeError") and rows[("vitcop", "1_9")]["error"] is None


def _row(suite, method, preset, prefill, ttft, rate, extra, flops):
    row = suite.Row("sdpa", method, preset)
    for p, t in zip(prefill, ttft):
        row.runs.append({"vision_encoder_s": 0.1, "prefill_s": p, "ttft_s": t, "decode_tokens_per_s": rate,
                         "pruning_s": 0.0, "prefill_extra_bytes": extra, "peak_allocated_bytes": 10 + extra,
                         "flops_ratio": flops, "n_visual": 100, "layer_averaged_ratio": flops})
    return row


def test_summary_ratios_and_targets(suite):
    rows = {
        ("sdpa", "none", "none"): _row(suite, "none", "none", [1.0, 3.0, 2.0], [2.0, 2.2, 2.1], 10.0, 8, 1.0),
        ("sdpa", "vitcop", "1_9"): _row(suite, "vitcop", "1_9", [0.2, 0.25, 0.3], [0.9, 0.7, 0.8], 20.0, 2, 0.2),
    }
    summary = {(r["method"], r["preset"]): r for r in suite.summarise(rows)}
    v = summary[("vitcop", "1_9")]
    assert v["prefill_speedup"] == pytest.approx(2.0 / 0.25)        # medians: 2.0 and 0.25
    assert v["ttft_speedup"] == pytest.approx(2.1 / 0.8)
    assert v["decode_ratio"] == pytest.approx(2.0)
    assert v["prefill_memory_ratio"] == pytest.approx(0.25)
    assert v["flops_speedup"] == pytest.approx(5.0)
    assert v["slack"] == pytest.approx((0.25 / 2.0) / 0.2)           # 0.625: faster than FLOPs predict
    targets = {t["target"]: t["status"] for t in suite.check_targets(list(summary.values()), ["sdpa"])}
    assert targets == {"prefill_speedup": "PASS", "ttft_speedup": "PASS", "prefill_memory_ratio": "PASS",
                       "slack": "PASS"}
    rows[("sdpa", "vitcop", "1_9")] = _row(suite, "vitcop", "1_9", [0.5], [1.0], 20.0, 6, 0.2)
    targets = {t["target"]: t["status"] for t in suite.check_targets(suite.summarise(rows), ["sdpa"])}
    assert targets == {"prefill_speedup": "FAIL", "ttft_speedup": "FAIL", "prefill_memory_ratio": "FAIL",
                       "slack": "FAIL"}                              # 4x, 2.1x, 0.75x, 1.25x


@pytest.mark.parametrize("family, billions, layers", [
    ("qwen2_vl", 8.29, 28), ("qwen2_5_vl", 8.29, 28), ("qwen3_vl", 8.77, 36), ("llava_onevision", 8.03, 28),
    ("qwen3_5", 9.41, 32),  # transformers' "Qwen3.5-9B style" default text config, vision out width 4096
])
def test_7b_configs_are_the_released_architectures(suite, family, billions, layers):
    """The 7B configs (data in the script) give the released checkpoints' parameter counts (meta device: no memory)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from vitcop_cli.models.devmodels import make_processor

    assert family in suite.SUITE_FAMILIES
    processor, ids = make_processor(family)
    config = suite.build_config(family, "7b", ids, len(processor.tokenizer))
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == billions
    assert config.get_text_config().num_hidden_layers == layers
    assert config.video_token_id == ids["<video>" if family == "llava_onevision" else "<|video_pad|>"]


def test_summary_splits_the_slack(suite):
    """kernels = survivors-only ratio / FLOPs ratio, vitcop = measured / survivors-only ratio (medians)."""
    rows = {
        ("sdpa", "none", "none"): _row(suite, "none", "none", [2.0], [2.1], 10.0, 8, 1.0),
        ("sdpa", "vitcop", "1_9"): _row(suite, "vitcop", "1_9", [0.3], [0.4], 20.0, 2, 0.1),
    }
    rows[("sdpa", "none", "none")].reference_s = [1.9, 2.0, 2.1]
    rows[("sdpa", "vitcop", "1_9")].reference_s = [0.25, 0.24, 0.26]
    v = {(r["method"], r["preset"]): r for r in suite.summarise(rows)}[("vitcop", "1_9")]
    assert v["reference_ratio"] == pytest.approx(0.25 / 2.0)
    assert v["kernel_slack"] == pytest.approx(1.25) and v["vitcop_slack"] == pytest.approx(0.15 / 0.125)
    assert v["kernel_slack"] * v["vitcop_slack"] == pytest.approx(v["slack"])


def test_a_failing_reference_is_logged_and_the_suite_goes_on(suite, monkeypatch, capsys, tmp_path):
    class Broken:
        def __init__(self, *args):
            raise RuntimeError("no causal path here")

    monkeypatch.setattr(suite, "SurvivorReference", Broken)
    code = suite.main(["--shape", "tiny", "--frames", "2", "--clip-size", "56x56", "--presets", "1_9",
                       "--methods", "vitcop", "--repeat", "1", "--warmup", "0", "--decode-tokens", "2",
                       "--device", "cpu", "--json", str(tmp_path / "s.json")])
    out = capsys.readouterr().out
    assert code == 0 and out.count("survivors-only reference under sdpa failed") == 1
    rows = {(r["method"], r["preset"]): r for r in json.loads((tmp_path / "s.json").read_text())["rows"]}
    assert rows[("vitcop", "1_9")]["slack"] is not None and rows[("vitcop", "1_9")]["kernel_slack"] is None
