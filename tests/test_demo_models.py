"""Built-in demo models (issue 19): ``--model tiny:<family>`` works on a fresh install, offline, in one
command; it is built once into the cache (atomically, under a lock) and named and flagged as a
random-weight demo model everywhere a result names its model.

Builds go into a per-test ``VITCOP_CACHE``. Only one test builds a real model (the first-use run
through the real CLI); the others seed the cache with the session's tiny model (the same builder,
the same seed) or patch the builder in a child process to count builds.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_cli import ANSI, assert_one_line_failure, invoke, subprocess_env
from vitcop_cli import api
from vitcop_cli.models import demo_models, devmodels
from vitcop_cli.errors import EnvironmentProblem, InputError, RuntimeFailure

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "samples" / "shapes.mp4"
DEMO = "tiny:qwen2_vl"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty vitcop cache for this test (``VITCOP_CACHE``)."""
    root = tmp_path / "vitcop-cache"
    monkeypatch.setenv("VITCOP_CACHE", str(root))
    return root


@pytest.fixture
def seeded(cache, tiny_models) -> Path:
    """The cache with ``tiny:qwen2_vl`` in place: a copy of the session's tiny model (the same build)."""
    folder = demo_models.parse(DEMO).folder
    folder.parent.mkdir(parents=True)
    shutil.copytree(tiny_models["qwen2_vl"], folder)
    return folder


# ---- names ----------------------------------------------------------------------------------
def test_every_buildable_family_is_a_demo_model_in_both_sizes():
    families = demo_models.families()
    assert families[: len(devmodels.FAMILIES)] == devmodels.FAMILIES
    assert set(families) == set(devmodels.BUILDABLE)  # qwen3_vl_moe and any family devmodels adds
    assert demo_models.names() == [f"{s}:{f}" for s in devmodels.SIZES for f in families]


@pytest.mark.parametrize("model", ["Qwen/Qwen2-VL-2B-Instruct", "./tiny:qwen2_vl", "/abs/tiny:qwen2_vl", "models/x",
                                   "small:qwen2_vl", "tiny_qwen2_vl"])
def test_other_references_are_not_demo_models(model):
    assert demo_models.parse(model) is None


def test_a_demo_name_parses_and_knows_its_depth():
    demo = demo_models.parse("bench:qwen3_vl")
    assert (demo.size, demo.family, demo.name) == ("bench", "qwen3_vl", "bench:qwen3_vl")
    assert demo.n_layers == devmodels.LM_SHAPES["bench"].layers


@pytest.mark.parametrize("model, shown", [("tiny:gpt2", "'gpt2'"), ("tiny:", "no family"),
                                          ("bench:Qwen2_VL", "'Qwen2_VL'")])
def test_an_unknown_family_is_one_line_listing_the_choices(model, shown):
    with pytest.raises(InputError) as info:
        demo_models.parse(model)
    message = str(info.value)
    assert shown in message and "vitcop models" in message and "\n" not in message
    size = model.split(":")[0]
    assert all(f"{size}:{f}" in message for f in demo_models.families())


def test_the_cli_refuses_an_unknown_family_before_building_anything(cache):
    result = invoke("ask", CLIP, "What happens?", "--model", "tiny:gpt2")
    assert_one_line_failure(result, 2, "'gpt2' is not a built-in demo model family", "tiny:qwen2_vl")
    assert not cache.exists()


# ---- where it is cached ---------------------------------------------------------------------
def test_cache_location_follows_the_media_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("VITCOP_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert demo_models.cache_root() == tmp_path / "hf" / "vitcop" / "models"
    monkeypatch.setenv("VITCOP_CACHE", str(tmp_path / "vc"))
    folder = demo_models.parse(DEMO).folder
    assert folder.parent == tmp_path / "vc" / "models" / "tiny-qwen2_vl"
    from importlib import metadata

    from vitcop_cli import __version__

    key = folder.name  # keyed by what a cached build depends on
    assert f"vitcop{__version__}" in key and f"transformers{metadata.version('transformers')}" in key


def test_the_build_key_changes_with_the_builder(monkeypatch, tmp_path):
    before = demo_models.build_key()
    sources = devmodels.builder_sources()
    assert any(p.name == "qwen2_vl.py" for p in sources)  # a family builder counts, not only the registry
    copy = tmp_path / "qwen2_vl.py"
    copy.write_bytes(next(p for p in sources if p.name == "qwen2_vl.py").read_bytes() + b"\n# changed\n")
    monkeypatch.setattr(devmodels, "builder_sources", lambda: [p if p.name != "qwen2_vl.py" else copy for p in sources])
    assert demo_models.build_key() != before


# ---- first use: offline, through the real CLI -----------------------------------------------
def test_first_use_builds_offline_and_answers_with_a_pruned_report(tmp_path):
    """The README's offline command on an empty cache with HF_HUB_OFFLINE=1 and an empty HF home."""
    cache = tmp_path / "empty-cache"
    env = subprocess_env(tmp_path, VITCOP_CACHE=cache)
    proc = subprocess.run(
        [sys.executable, "-m", "vitcop_cli", "ask", str(CLIP), "What happens?", "--model", DEMO, "--preset", "1_9",
         "--json", "--max-new-tokens", "8"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["model"] == DEMO and result["demo_model"] is True and result["preset"] == "1_9"
    assert result["tokens"]["generated"] >= 1 and isinstance(result["answer"], str)
    p = result["pruning"]
    assert p["after_stage1"] < p["n_visual"] and p["after_stage3"] < p["after_stage2"] < p["after_stage1"]
    assert "random weights" in result["warnings"][0] and "meaningless" in result["warnings"][0]
    assert "warning: tiny:qwen2_vl is a built-in demo model" in proc.stderr
    parent = cache / "models" / "tiny-qwen2_vl"
    builds = [p for p in parent.iterdir() if p.is_dir()]
    assert len(builds) == 1 and (builds[0] / "config.json").is_file()  # no temp folder left behind
    assert json.loads((builds[0] / "vitcop_devmodel.json").read_text())["family"] == "qwen2_vl"


def test_the_human_report_says_it_is_a_demo_model(seeded):
    result = invoke("ask", CLIP, "What happens?", "--model", DEMO, "--preset", "1_9", "--frames", 4,
                    "--max-new-tokens", 2, "--no-stream", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    err = ANSI.sub("", result.stderr)
    assert f"vitcop · {DEMO} (random-weight demo model) · preset 1_9" in err
    assert "warning: tiny:qwen2_vl is a built-in demo model with random weights" in err


def test_a_cached_demo_model_is_reused(seeded, monkeypatch):
    monkeypatch.setattr(devmodels, "make_model", lambda *a, **k: pytest.fail("a cached demo model was rebuilt"))
    assert demo_models.ensure(demo_models.parse(DEMO)) == seeded
    session = api.load(DEMO, device="cpu")
    assert session.name == DEMO and session.demo_model is True


# ---- concurrency and crashes ----------------------------------------------------------------
_CHILD = """
import json, os, sys, time
from pathlib import Path
from vitcop_cli.models import demo_models, devmodels
log, seconds = Path(sys.argv[1]), float(sys.argv[2])
def counting_builder(family, out, size="tiny", seed=0):
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\\n")
    (Path(out) / "partial.bin").write_bytes(b"x")
    time.sleep(seconds)
    (Path(out) / "config.json").write_text(json.dumps({"model_type": family}))
    return Path(out)
devmodels.make_model = counting_builder
print(demo_models.ensure(demo_models.parse(sys.argv[3])), flush=True)
"""


def _child(tmp_path, log, seconds, model=DEMO):
    env = subprocess_env(tmp_path, VITCOP_CACHE=tmp_path / "cache")
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(log), str(seconds), model], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_two_concurrent_first_uses_build_once(tmp_path):
    log = tmp_path / "builds.log"
    first = _child(tmp_path, log, 2.0)
    _wait_for(log)  # the first is building (and holds the lock) when the second starts
    second = _child(tmp_path, log, 0.0)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert len(log.read_text().split()) == 1  # one build
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1 and (Path(paths.pop()) / "config.json").is_file()


def test_a_killed_build_leaves_nothing_that_breaks_the_next(tmp_path, monkeypatch):
    log = tmp_path / "builds.log"
    child = _child(tmp_path, log, 600.0)
    _wait_for(log)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    demo = demo_models.parse(DEMO)
    monkeypatch.setenv("VITCOP_CACHE", str(tmp_path / "cache"))
    leftovers = list(demo.folder.parent.glob(".*.building-*"))
    assert leftovers and not demo.folder.exists()  # what a kill leaves: a temp folder, no model

    def quick(family, out, size="tiny", seed=0):
        (Path(out) / "config.json").write_text(json.dumps({"model_type": family}))
        return Path(out)

    monkeypatch.setattr(devmodels, "make_model", quick)
    assert demo_models.ensure(demo) == demo.folder and (demo.folder / "config.json").is_file()
    assert not any(p.exists() for p in leftovers) and not (demo.folder / "partial.bin").exists()


def test_a_damaged_cached_folder_is_rebuilt(cache, monkeypatch):
    demo = demo_models.parse(DEMO)
    demo.folder.mkdir(parents=True)
    (demo.folder / "model.safetensors").write_bytes(b"half")  # no config.json: not a complete build
    def quick(family, out, size="tiny", seed=0):
        (Path(out) / "config.json").write_text("{}")
        return Path(out)

    monkeypatch.setattr(devmodels, "make_model", quick)
    demo_models.ensure(demo)
    assert sorted(p.name for p in demo.folder.iterdir()) == ["config.json"]


def test_a_builder_failing_inside_transformers_is_an_environment_problem(cache, monkeypatch):
    def broken(*a, **k):
        raise ImportError("cannot import name 'Qwen2VLConfig' from 'transformers'")

    monkeypatch.setattr(devmodels, "make_model", broken)
    demo = demo_models.parse(DEMO)
    with pytest.raises(EnvironmentProblem, match=r"transformers \S+ failed while building the demo model tiny:qwen2_vl"
                       ):
        demo_models.ensure(demo)
    assert [p.name for p in demo.folder.parent.iterdir()] == [f".{demo.folder.name}.lock"]  # nothing half-built


def test_an_unwritable_cache_says_so(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("VITCOP_CACHE", str(blocker))
    with pytest.raises(RuntimeFailure, match="cannot write the demo model tiny:qwen2_vl into .*VITCOP_CACHE"):
        demo_models.ensure(demo_models.parse(DEMO))


# ---- how results name it --------------------------------------------------------------------
def test_results_name_the_demo_model_stably(seeded, tmp_path):
    assert api.model_identity(DEMO) == DEMO
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(CLIP, clips / "a.mp4")
    out = tmp_path / "out.jsonl"
    result = invoke("batch", clips, "-q", "What happens?", "--out", out, "--model", DEMO, "--preset", "1_9",
                    "--frames", 4, "--max-new-tokens", 2)
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["model"] == DEMO and line["demo_model"] is True and line["error"] is None
    again = invoke("batch", clips, "-q", "What happens?", "--out", out, "--model", DEMO, "--preset", "1_9",
                   "--frames", 4, "--max-new-tokens", 2, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == 1  # resumed: the same key


def test_presets_shows_a_demo_models_depth_without_building_it(cache):
    result = invoke("presets", "--model", "bench:qwen2_vl", env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert f"bench:qwen2_vl ({devmodels.LM_SHAPES['bench'].layers} LLM layers)" in ANSI.sub("", result.stdout)
    assert not cache.exists()


# ---- vitcop models --------------------------------------------------------------------------
def test_models_lists_every_name_and_what_is_cached(seeded):
    result = invoke("models", env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    lines = ANSI.sub("", result.stdout).splitlines()
    for name in demo_models.names():
        (row,) = [line for line in lines if f" {name} " in line]
        assert ("yes" in row) == (name == DEMO), row
    assert str(demo_models.cache_root()) in result.stdout
    data = json.loads(invoke("models", "--json").stdout)
    assert data["schema"] == "vitcop.models/1" and [m["name"] for m in data["models"]] == demo_models.names()
    assert {m["name"]: m["cached"] for m in data["models"]}[DEMO] is True
    assert {m["name"]: m["folder"] for m in data["models"]}[DEMO] == str(seeded)


def test_models_imports_neither_torch_nor_transformers(tmp_path):
    script = ("import sys, runpy\nsys.argv = ['vitcop', 'models']\n"
              "try:\n    runpy.run_module('vitcop_cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
              "print('HEAVY=' + ','.join(m for m in ('torch', 'transformers') if m in sys.modules), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=subprocess_env(tmp_path, VITCOP_CACHE=tmp_path / "c"))
    assert proc.stderr.strip().splitlines()[-1] == "HEAVY=", proc.stderr
    assert "tiny:qwen2_vl" in proc.stdout


def test_readme_first_screen_shows_the_real_then_the_offline_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = readme.split("\n## ", 1)[0]
    real = first.index('vitcop ask samples/shapes.mp4 "What happens in this video?"')
    offline = first.index('vitcop ask samples/shapes.mp4 "What happens?" --model tiny:qwen2_vl --preset 1_9')
    assert real < offline
    assert "vitcop models" in readme
