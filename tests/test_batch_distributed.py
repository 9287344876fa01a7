"""``vitcop batch`` on torch.distributed: 2 CPU ranks (gloo) under torchrun, tiny model, ``--frames 4``.

Every (video, question, model, preset, method) ends up exactly once in ``--out``; broken clips are
recorded and make the job exit 1; a rank killed with SIGKILL, or rank 0 dying between the parts and
the merge, loses and duplicates nothing on a re-run with 2 ranks or 1; the answers equal a
single-process run; a rank failing to load the model ends the job with one message naming it; under
``torchrun --max-restarts 1`` a group restarted after a rank's SIGKILL resumes and exits 0.
Faults are injected by ``tests/batch_faults.py`` (see its docstring). No timing assertions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitcop_cli.app import app
from vitcop_cli.batch import items_from_folder, record_key, run_batch

pytest.importorskip("torch.distributed.run")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
FAULTS = Path(__file__).resolve().parent / "batch_faults.py"
QUESTION = "What happens?"
PRESETS = "none,1_9"
GOOD = 8
BROKEN = ("broken.mp4", "truncated.mp4")
KEYS = (GOOD + len(BROKEN)) * 2  # none once + 1_9 under vitcop


@pytest.fixture
def folder(tmp_path) -> Path:
    """8 good clips (videos and an image, cycling over the samples) and 2 broken ones."""
    root = tmp_path / "clips"
    root.mkdir()
    sources = [SAMPLES / "shapes.mp4", SAMPLES / "bounce.mp4", SAMPLES / "scene.png"]
    for i in range(GOOD):
        src = sources[i % len(sources)]
        shutil.copy(src, root / f"c{i}{src.suffix}")
    (root / BROKEN[0]).write_text("not a video\n")
    (root / BROKEN[1]).write_bytes((SAMPLES / "shapes.mp4").read_bytes()[:2048])
    return root


def batch_args(model, folder, out, *extra) -> list[str]:
    return ["batch", str(folder), "-q", QUESTION, "-o", str(out), "-m", str(model), "--offline", "--frames", "4",
            "--max-new-tokens", "2", "-p", PRESETS, *extra]


def env(**extra) -> dict:
    e = dict(os.environ, NO_COLOR="1", COLUMNS="200", OMP_NUM_THREADS="1", VITCOP_DIST_TIMEOUT="300", **extra)
    e.pop("VITCOP_TEST_FAULT", None)
    e.update(extra)
    return e


def torchrun(args, *, fault: str | None = None, nproc: int = 2, launcher: tuple = (),
             **extra_env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *launcher,
           str(FAULTS), *args]
    extra = dict(extra_env, **({"VITCOP_TEST_FAULT": fault} if fault else {}))
    return subprocess.run(cmd, capture_output=True, text=True, env=env(**extra), timeout=600, cwd=ROOT)


def lines_of(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def check_exactly_once(out: Path, folder: Path) -> list[dict]:
    recs = lines_of(out)
    keys = [record_key(r) for r in recs]
    assert len(keys) == len(set(keys)) == KEYS, (len(keys), len(set(keys)))
    assert {Path(r["video"]).name for r in recs} == {p.name for p in folder.iterdir()}
    assert {(r["preset"], r["method"]) for r in recs} == {("none", "none"), ("1_9", "vitcop")}
    for r in recs:
        broken = Path(r["video"]).name in BROKEN
        assert (r["error"] is not None) == broken, r
    assert not list(out.parent.glob(out.name + ".part-*")), "parts must be merged and removed"
    return recs


def invoke(args):
    return CliRunner().invoke(app, args, env={"NO_COLOR": "1", "COLUMNS": "200"})


def test_nproc_2_every_key_once_same_answers_as_one_process(tiny_models, sessions, tmp_path, folder):
    model = tiny_models["qwen2_vl"]
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "vitcop_cli", *batch_args(model, folder, out, "--nproc", "2", "--json")],
        capture_output=True, text=True, env=env(), timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stderr  # the broken clips
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["ranks"], summary["ok"], summary["failed"], summary["skipped"]) == (2, GOOD * 2, 4, 0)
    # rank 0 reports every rank's failures, once each
    failed_lines = [line for line in proc.stderr.splitlines() if line.startswith("failed ")]
    assert sorted(line.split()[1] for line in failed_lines) == sorted([*BROKEN, *BROKEN])
    recs = check_exactly_once(out, folder)

    single = tmp_path / "single.jsonl"
    items = items_from_folder(folder, [QUESTION])
    run_batch(sessions["qwen2_vl"], items, single, presets=PRESETS.split(","), frames=4, max_new_tokens=2)
    expect = {(r["id"], r["preset"], r["method"]): (r["generated_ids"], r["error"] is None) for r in lines_of(single)}
    got = {(r["id"], r["preset"], r["method"]): (r["generated_ids"], r["error"] is None) for r in recs}
    assert got == expect


def test_kill_9_a_rank_then_a_crash_before_the_merge_then_one_rank(tiny_models, tmp_path, folder):
    """Run A: rank 1 is killed with SIGKILL mid-run. Run B (2 ranks) resumes it, and rank 0 dies after
    every rank finished, before the final merge. Run C (1 rank) recovers: nothing lost, nothing twice."""
    model = tiny_models["qwen2_vl"]
    out = tmp_path / "out.jsonl"
    killed = torchrun(batch_args(model, folder, out), fault="kill:1:2")
    assert killed.returncode != 0
    parts = sorted(tmp_path.glob("out.jsonl.part-*"))
    assert [p.name for p in parts] == ["out.jsonl.part-00000", "out.jsonl.part-00001"]
    assert sum(r["error"] is None for r in lines_of(parts[1])) == 2  # rank 1 answered twice, then died
    done_in_a = sum(len(lines_of(p)) for p in parts)
    assert done_in_a < KEYS
    with open(parts[1], "ab") as fh:  # and as if it died writing a line
        fh.write(b'{"id": "c7.mp4", "video": "/some')

    crashed = torchrun(batch_args(model, folder, out), fault="crash-before-merge")
    assert crashed.returncode != 0
    recs_a = lines_of(out)  # run B merged run A's parts first (the torn line dropped) ...
    assert len(recs_a) == done_in_a and len({record_key(r) for r in recs_a}) == done_in_a
    parts = sorted(tmp_path.glob("out.jsonl.part-*"))  # ... and left its own unmerged
    keys_b = [record_key(r) for p in parts for r in lines_of(p)]
    ok_a = {record_key(r) for r in recs_a if r["error"] is None}
    assert len(parts) == 2 and len(keys_b) == len(set(keys_b))
    assert not ok_a & set(keys_b) and len(ok_a | set(keys_b)) == KEYS  # B ran exactly what A had not answered

    resumed = invoke(batch_args(model, folder, out, "--json"))  # a different rank count: 1
    assert resumed.exit_code == 1, resumed.output
    s = json.loads(resumed.stdout)
    assert (s["ok"], s["failed"], s["skipped"], s["ranks"]) == (0, 4, GOOD * 2, 1)  # only the broken clips ran
    recs = check_exactly_once(out, folder)
    ok = {record_key(r): r["generated_ids"] for r in recs if r["error"] is None}
    assert all(ok[record_key(r)] == r["generated_ids"] for r in recs_a if r["error"] is None)


def test_a_rank_failing_to_load_the_model_fails_the_job_with_one_message(tiny_models, tmp_path, folder):
    out = tmp_path / "out.jsonl"
    proc = torchrun(batch_args(tiny_models["qwen2_vl"], folder, out), fault="load:1")
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1, proc.stderr
    assert ours[0].startswith("error: rank 1 on ") and "loading the model failed" in ours[0]
    assert "out of GPU memory while loading (injected)" in ours[0]
    assert not out.exists() and not list(tmp_path.glob("out.jsonl.part-*"))


def test_max_restarts_resumes_where_the_group_stopped(tiny_models, tmp_path):
    """torchrun --max-restarts 1: rank 1 is killed (SIGKILL) after one answer in the first attempt only;
    the restarted group merges what the first attempt wrote, runs the rest, and the job exits 0 with
    every key exactly once in --out and no part file left."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for i, name in enumerate(["shapes.mp4", "bounce.mp4", "scene.png", "shapes.mp4"]):  # rank 1 gets 2 of them
        src = SAMPLES / name
        shutil.copy(src, clips / f"g{i}{src.suffix}")
    out, log = tmp_path / "out.jsonl", tmp_path / "faults.log"
    args = ["batch", str(clips), "-q", QUESTION, "-o", str(out), "-m", str(tiny_models["qwen2_vl"]), "--offline",
            "--frames", "2", "--max-new-tokens", "1", "-p", "none", "--json"]
    proc = torchrun(args, fault="kill:1:1", launcher=("--max-restarts", "1"), VITCOP_TEST_FAULT_LOG=str(log))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert log.read_text().splitlines() == ["killed rank 1 before answer 2"]  # the first attempt did die
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])  # the restarted group's rank 0
    assert summary["ranks"] == 2 and summary["failed"] == 0 and summary["exit_code"] == 0
    assert summary["skipped"] >= 1 and summary["ok"] + summary["skipped"] == 4  # resumed, not redone
    recs = lines_of(out)
    keys = [record_key(r) for r in recs]
    assert len(keys) == len(set(keys)) == 4 and all(r["error"] is None for r in recs)
    assert {Path(r["video"]).name for r in recs} == {p.name for p in clips.iterdir()}
    assert not list(tmp_path.glob("out.jsonl.part-*"))
