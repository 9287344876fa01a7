"""CPU smoke test of ``benchmarks/ttft_breakdown.py`` (phases, slack and its split, the static-clip saving).

The script runs as a user runs it (a subprocess) on a tiny checkpoint with one repeat. Timings are never
asserted; structure, the arithmetic of the slack's split and the encoder-reuse counts are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "ttft_breakdown.py"


def test_breakdown_runs_and_splits_the_slack(tiny_models, tmp_path):
    out = tmp_path / "ttft.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(tiny_models["qwen2_vl"]), "--frames", "4", "--repeat", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: a target missed (tiny timings are noise)
    assert "reference" in proc.stdout and "kernels" in proc.stdout and "generate_setup" in proc.stdout
    report = json.loads(out.read_text())
    (clip,) = report["clips"].values()
    rows = clip["rows"]
    assert set(rows) == {"none", "1_3", "1_9"}
    assert rows["none"]["reference_ratio"] == 1.0
    for preset in ("1_3", "1_9"):
        row = rows[preset]
        assert row["reference_s"] > 0 and row["flops_ratio"] < 1 and row["best_slack"] > 0
        assert row["kernel_slack"] * row["vitcop_slack"] == pytest.approx(row["slack"], rel=1e-9)
    static = report["static"]
    assert static["rows"]["1_9"]["encoder_patches"] == [8, 3]  # 16 frames, last 12 still: 3 distinct patches
    assert "reference_s" not in static["rows"]["1_9"]  # the static clip times the encoder only
