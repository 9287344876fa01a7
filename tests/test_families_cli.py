"""``vitcop profile`` and ``vitcop batch`` through the CLI on the newer families (issue 9's done-when).

The profile and batch suites exercise their plumbing on the tiny Qwen2-VL (and LLaVA-OneVision);
here each newer family (``qwen2_5_vl``: windowed vision encoder; ``qwen3_vl``: DeepStack,
interleaved M-RoPE, timestamps in the prompt) runs both commands once, end to end, on its tiny
random checkpoint, kept minimal (4 frames, 2 new tokens, one measured profile run, no warm-up).

Contract checked:

- ``profile --presets none,1_9 --json``: exit 0; one JSON object of schema ``vitcop.profile/2``
  whose fields and types equal the profile suite's schema, carrying the family's ``model_type``;
  the baseline row is unpruned (N = V = Rs = Rd) and every pruned row prunes at every stage
  (N > V > Rs > Rd >= 1).
- ``batch <folder: one clip, one image> -p 1_9``: exit 0; one JSONL line per item, each without
  an error, a full ask report for the family (the ask suite's field-by-field check) with
  N > V > Rs > Rd >= 1.

No timing assertions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from test_api import check_ask_dict
from test_profile import SCHEMA as PROFILE_SCHEMA, check_schema
from vitcop_cli.app import app

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CLIP = SAMPLES / "shapes.mp4"
FRAMES, MAX_NEW = 4, 2
NEW_FAMILIES = ("qwen2_5_vl", "qwen3_vl", "qwen3_5")
QUESTION = "What happens?"

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"NO_COLOR": "1", "COLUMNS": "200"})


def n_layers(model_dir: Path) -> int:
    """The LLM depth from the checkpoint's config (the batch run's own session is not reachable)."""
    config = json.loads((model_dir / "config.json").read_text())
    return config.get("text_config", config)["num_hidden_layers"]


def assert_pruned_at_every_stage(p: dict, where) -> None:
    assert p["n_visual"] > p["after_stage1"] > p["after_stage2"] > p["after_stage3"] >= 1, (where, p)


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_profile_runs_on_the_family(tiny_models, family):
    model = tiny_models[family]
    result = invoke("profile", CLIP, "--presets", "none,1_9", "--repeat", 1, "--warmup", 0, "--frames", FRAMES,
                    "--max-new-tokens", MAX_NEW, "--json", "-m", model, "--offline")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.stderr
    d = json.loads(result.stdout)  # all of stdout is one JSON object
    check_schema(d, PROFILE_SCHEMA)
    assert d["schema"] == "vitcop.profile/2"
    assert (d["model"], d["model_type"], d["kind"], d["frames"]) == (str(model), family, "video", FRAMES)
    assert d["presets"] == ["none", "1_9"] and (d["repeat"], d["warmup"]) == (1, 0)

    rows = {(r["method"], r["preset"]): r for r in d["rows"]}
    assert list(rows) == [("none", "none"), ("vitcop", "1_9")]
    base = rows["none", "none"]
    assert base["n_visual"] == base["after_stage1"] == base["after_stage2"] == base["after_stage3"] == d["n_visual"] > 0
    for key, r in rows.items():
        if key == ("none", "none"):
            continue
        assert r["n_visual"] == d["n_visual"], key
        assert_pruned_at_every_stage(r, key)
        assert r["shallow_layer"] is not None and r["deep_layer"] is not None, key
        assert r["flops_ratio"] < 1 and r["layer_averaged_ratio"] < 1, key
        assert 1 <= r["generated_tokens"] <= MAX_NEW and r["runs"] == 1, key


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_batch_runs_on_the_family(tiny_models, tmp_path, family):
    model = str(tiny_models[family])
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy(CLIP, folder / "shapes.mp4")
    shutil.copy(SAMPLES / "scene.png", folder / "scene.png")
    out = tmp_path / "out.jsonl"
    result = invoke("batch", folder, "-q", QUESTION, "-o", out, "-p", "1_9", "-m", model, "--offline",
                    "--frames", FRAMES, "--max-new-tokens", MAX_NEW)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.output
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(records) == ["scene.png", "shapes.mp4"]
    for rid, kind in (("shapes.mp4", "video"), ("scene.png", "image")):
        r = records[rid]
        assert r["error"] is None, (rid, r["error"])
        assert (r["model_type"], r["method"], r["preset"]) == (family, "vitcop", "1_9"), rid
        check_ask_dict(r, family=family, kind=kind, model=model, preset="1_9", max_new_tokens=MAX_NEW,
                       n_layers=n_layers(tiny_models[family]), question=QUESTION,
                       path=str((folder / rid).resolve()))
        assert_pruned_at_every_stage(r["pruning"], rid)
