"""The ``vitcop`` command line on the tiny models: ask (JSON + streaming), every bad input, presets, dev.

Most runs go through ``typer.testing.CliRunner`` (in-process, stdout and stderr captured apart);
the few where the real process matters (nothing but JSON on stdout, FFmpeg's native stderr, an empty
Hugging Face cache, progress bars) run ``python -m vitcop_cli.app`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from test_api import (
    CLIP,
    FRAMES,
    IMAGE,
    MEDIA,
    QUESTION,
    check_ask_dict,
    check_preset_none,
    check_strictly_pruned,
    n_layers_of,
)
from vitcop_cli import api
from vitcop_cli.app import app

ROOT = Path(__file__).resolve().parent.parent
MAX_NEW = 6
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

runner = CliRunner()


def invoke(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env={"NO_COLOR": "1", **(env or {})})


def ask_args(model, media=CLIP, *extra):
    return ["ask", media, QUESTION, "--model", model, "--offline", "--frames", FRAMES,
            "--max-new-tokens", MAX_NEW, *extra]


def assert_one_line_failure(result, code: int, *needles: str) -> str:
    """Exit ``code``, nothing on stdout, one ``error:`` line on stderr naming the problem, no traceback."""
    stderr = ANSI.sub("", result.stderr)
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def subprocess_env(tmp_path: Path, **extra) -> dict:
    """A clean environment: this checkout on the path, an empty Hugging Face home, no network, no colour."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "FORCE_COLOR")}
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir(exist_ok=True)
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1",
        NO_COLOR="1",
        PYTHONIOENCODING="utf-8",
        TOKENIZERS_PARALLELISM="false",
        COLUMNS="80",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(args, tmp_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitcop_cli.app", *[str(a) for a in args]],
        cwd=tmp_path, env=subprocess_env(tmp_path, **env), capture_output=True, text=True,
        encoding="utf-8", timeout=300,
    )


# --------------------------------------------------------------------------------------------
# ask --json, both families, video and image
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_json(tiny_models):
    """cli_json(family, kind, preset) -> parsed --json output (one CLI run per key)."""
    cache = {}

    def get(family, kind, preset):
        key = (family, kind, preset)
        if key not in cache:
            result = invoke(*ask_args(tiny_models[family], MEDIA[kind], "--preset", preset, "--json"))
            assert result.exit_code == 0, (result.output, result.exception)
            cache[key] = json.loads(result.stdout)  # the whole of stdout is one JSON object
        return cache[key]

    return get


@pytest.mark.parametrize("kind, preset", [("video", "1_9"), ("video", "none"), ("image", "1_9")])
def test_ask_json_report(cli_json, sessions, tiny_models, family, kind, preset):
    d = cli_json(family, kind, preset)
    check_ask_dict(
        d,
        family=family,
        kind=kind,
        model=str(tiny_models[family]),
        preset=preset,
        max_new_tokens=MAX_NEW,
        n_layers=n_layers_of(sessions[family]),
        tokenizer=sessions[family].processor.tokenizer,
        path=str(MEDIA[kind]),
    )
    if preset == "none":
        check_preset_none(d)
    elif kind == "video":
        check_strictly_pruned(d)
    # The CLI is a thin layer over the library: the same inputs give the same tokens and counts.
    lib = sessions[family].ask(MEDIA[kind], QUESTION, preset=preset, frames=FRAMES, max_new_tokens=MAX_NEW)
    assert d["generated_ids"] == lib.generated_ids
    assert d["answer"] == lib.answer
    assert d["tokens"] == lib.to_dict()["tokens"]
    assert d["pruning"]["kv_cache_lengths"] == lib.pruning.kv_cache_lengths


def test_ask_stream_prints_the_json_answer(cli_json, tiny_models, family):
    """--stream (the default) writes the answer to stdout as it comes; the report goes to stderr."""
    expected = cli_json(family, "video", "1_9")["answer"]
    result = invoke(*ask_args(tiny_models[family], CLIP, "--preset", "1_9"))
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.strip() == expected
    assert result.stdout.endswith("\n")
    assert "time to first token" in result.stderr and "time to first token" not in result.stdout

    result = invoke(*ask_args(tiny_models[family], CLIP, "--preset", "1_9", "--no-stream"))
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout == expected + "\n"


# --------------------------------------------------------------------------------------------
# real processes: stdout purity, streaming, FFmpeg noise, empty HF cache
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llava_json_process(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("proc-json")
    return run_cli(ask_args(tiny_models["llava_onevision"], CLIP, "--preset", "1_9", "--json"), tmp)


def test_process_json_stdout_is_exactly_one_object(llava_json_process, sessions, tiny_models):
    proc = llava_json_process
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("{") and proc.stdout.endswith("}\n")
    d = json.loads(proc.stdout)  # raises on anything else on stdout (warnings, progress bars, text)
    check_ask_dict(
        d, family="llava_onevision", kind="video", model=str(tiny_models["llava_onevision"]), preset="1_9",
        max_new_tokens=MAX_NEW, n_layers=n_layers_of(sessions["llava_onevision"]),
        tokenizer=sessions["llava_onevision"].processor.tokenizer, path=str(CLIP),
    )
    assert "Traceback" not in proc.stderr


def test_process_stream_stdout_equals_json_answer(llava_json_process, tiny_models, tmp_path):
    answer = json.loads(llava_json_process.stdout)["answer"]
    assert answer, "precondition: the tiny LLaVA-OneVision answers with some text"
    proc = run_cli(ask_args(tiny_models["llava_onevision"], CLIP, "--preset", "1_9"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == answer
    assert "time to first token" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_process_corrupt_video_gives_one_line_even_on_a_narrow_terminal(tiny_models, tmp_path):
    """FFmpeg writes to the native stderr; none of it may leak, and rich must not wrap the message."""
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(CLIP.read_bytes()[:2048])
    proc = run_cli(ask_args(tiny_models["qwen2_vl"], truncated), tmp_path, COLUMNS=40)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and str(truncated) in lines[0] and "corrupt or truncated" in lines[0]


def test_process_offline_model_not_in_cache(tmp_path):
    proc = run_cli(
        ["ask", CLIP, QUESTION, "--model", "some-org/not-cached-model", "--offline", "--frames", FRAMES],
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "'some-org/not-cached-model'" in lines[0]
    assert "not in the local Hugging Face cache" in lines[0] and "--offline" in lines[0]


# --------------------------------------------------------------------------------------------
# bad input: exit 2, one line on stderr naming the problem, no traceback
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_models):
    d = tmp_path_factory.mktemp("bad")
    (d / "a folder").mkdir()
    (d / "text.mp4").write_text("this is not a video\n")
    (d / "truncated.mp4").write_bytes(CLIP.read_bytes()[:2048])
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.txt").write_text("hello\n")
    (d / "bad-preset.yaml").write_text("ratio: 2\nvision_keep: 0.5\ncluster_fraction: 0.1\n")
    for model_type in ("llava", "qwen2", "not_a_real_architecture"):
        folder = d / f"model-{model_type}"
        shutil.copytree(tiny_models["qwen2_vl"], folder)
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = model_type
        (folder / "config.json").write_text(json.dumps(config))
    (d / "empty-model").mkdir()
    return d


SUPPORTED = ("llava_onevision", "qwen2_vl")

# (id, media (name in `bad`, or None for the sample clip), extra args, needles)
BAD_CASES = [
    ("missing-file", "missing.mp4", [], ["file not found", "missing.mp4"]),
    ("directory", "a folder", [], ["is a directory", "a folder"]),
    ("text-file-named-mp4", "text.mp4", [], ["cannot read video", "text.mp4", "not a valid video file"]),
    ("truncated-video", "truncated.mp4", [], ["truncated.mp4", "corrupt or truncated"]),
    ("zero-byte-mp4", "empty.mp4", [], ["empty.mp4", "empty (0 bytes)"]),
    ("unsupported-extension", "notes.txt", [], ["unsupported file type", "'.txt'", "mp4", "png"]),
    ("model-type-llava", None, ["--model", "{bad}/model-llava"], ["model_type 'llava' is not supported", *SUPPORTED]),
    ("text-only-model", None, ["--model", "{bad}/model-qwen2"], ["model_type 'qwen2' is not supported", *SUPPORTED]),
    ("unknown-architecture", None, ["--model", "{bad}/model-not_a_real_architecture"],
     ["model_type 'not_a_real_architecture' is not supported", *SUPPORTED]),
    ("not-a-checkpoint", None, ["--model", "{bad}/empty-model"], ["not a loadable checkpoint folder"]),
    ("device-cuda", None, ["--device", "cuda"], ["--device cuda", "CUDA is not available"]),
    ("fps-and-frames", None, ["--fps", "1"], ["--fps", "--frames", "mutually exclusive"]),
    ("top-p-greedy", None, ["--top-p", "0.9"], ["--top-p", "--temperature"]),
    ("bad-preset-name", None, ["--preset", "bogus"], ["unknown preset 'bogus'", "none", "1_3", "2_9", "1_9"]),
    ("bad-preset-file", None, ["--preset", "{bad}/bad-preset.yaml"], ["ratio", "bad-preset.yaml"]),
    ("bad-dtype", None, ["--dtype", "float8"], ["unknown dtype 'float8'"]),
    ("flash-attn-on-cpu", None, ["--device", "cpu", "--attn", "flash_attention_2"], ["flash_attention_2"]),
    ("max-new-tokens-0", None, ["--max-new-tokens", "0"], ["--max-new-tokens"]),
    ("min-over-max-pixels", None, ["--min-pixels", "100000", "--max-pixels", "1000"], ["--min-pixels", "--max-pixels"]),
]


@pytest.mark.parametrize("media, extra, needles", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_ask_bad_input(bad, tiny_models, media, extra, needles):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    path = CLIP if media is None else bad / media
    extra = [a.replace("{bad}", str(bad)) for a in extra]
    result = invoke(*ask_args(tiny_models["qwen2_vl"], path), *extra)
    assert_one_line_failure(result, 2, *needles)


def test_ask_empty_question(tiny_models):
    result = invoke("ask", CLIP, "   ", "--model", tiny_models["qwen2_vl"], "--offline", "--frames", FRAMES)
    assert_one_line_failure(result, 2, "question is empty")


@pytest.mark.parametrize(
    "name",
    ["my [final] cut.mp4", "a[/b]/c.mp4"],  # "[final]" was eaten as markup; "[/b]" crashed rich
)
def test_error_messages_print_paths_verbatim(tmp_path, tiny_models, name):
    path = tmp_path / name
    result = invoke(*ask_args(tiny_models["qwen2_vl"], path))
    assert_one_line_failure(result, 2, "file not found", str(path))


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("api.load must not be called")

    monkeypatch.setattr(api, "load", refuse)


def test_missing_file_fails_before_loading_a_model(tmp_path, no_model_loading):
    missing = tmp_path / "missing.mp4"
    result = invoke("ask", missing, QUESTION, "--model", "/nonexistent/model", "--offline")
    assert_one_line_failure(result, 2, "file not found", str(missing))
    result = invoke("ask", missing, QUESTION, "--model", "some-org/not-cached-model")  # not even online
    assert_one_line_failure(result, 2, "file not found")


def test_bad_preset_fails_before_loading_a_model(no_model_loading):
    result = invoke("ask", CLIP, QUESTION, "--model", "/nonexistent/model", "--preset", "1_7")
    assert_one_line_failure(result, 2, "unknown preset '1_7'")


def test_debug_shows_the_traceback(tiny_models):
    result = invoke(*ask_args(tiny_models["qwen2_vl"], CLIP, "--preset", "bogus", "--debug"))
    assert result.exit_code == 2
    assert result.stdout == ""
    stderr = ANSI.sub("", result.stderr)
    assert "Traceback" in stderr
    assert "InputError" in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: unknown preset 'bogus'")
    # --debug does not stick to later commands in the same process
    made = invoke("dev", "make-model", "no_such_family", "unused")
    assert_one_line_failure(made, 2, "unknown model family")
    again = invoke(*ask_args(tiny_models["qwen2_vl"], CLIP, "--preset", "bogus"))
    assert_one_line_failure(again, 2, "unknown preset 'bogus'")


def test_unexpected_errors_are_one_line_with_exit_1(monkeypatch, tiny_models):
    def boom(*args, **kwargs):
        raise RuntimeError("kaboom [/x]\nsecond line")

    monkeypatch.setattr(api, "load", boom)
    result = invoke(*ask_args(tiny_models["qwen2_vl"]))
    line = assert_one_line_failure(result, 1, "RuntimeError: kaboom [/x]", "--debug")
    assert "second line" not in line
    result = invoke(*ask_args(tiny_models["qwen2_vl"]), "--debug")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "kaboom" in result.stderr


def test_interrupt_exits_130(monkeypatch, tiny_models):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "load", interrupted)
    result = invoke(*ask_args(tiny_models["qwen2_vl"]))
    assert result.exit_code == 130
    assert ANSI.sub("", result.stderr).strip() == "interrupted"
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------


def _preset_rows(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] in ("none", "1_3", "2_9", "1_9"):
            rows[cells[0]] = cells
    return rows


def _expected_cells(row) -> list[str]:
    at = lambda n, layer: f"{n}" if layer is None else f"{n} @ {layer}"  # noqa: E731
    return [row.name, f"{row.ratio:.3f}", f"{row.vision_keep:.2f}", str(row.V), at(row.Rs, row.shallow_layer),
            at(row.Rd, row.deep_layer)]


@pytest.mark.parametrize("with_model", [False, True], ids=["default-depth", "tiny-model"])
def test_presets_table(tiny_models, sessions, with_model):
    args = ["presets"]
    n_visual = 4096
    if with_model:
        n_visual = 108
        args += ["--model", tiny_models["qwen2_vl"], "--offline", "--visual-tokens", n_visual]
    result = invoke(*args, env={"COLUMNS": "220"})
    assert result.exit_code == 0, (result.output, result.exception)
    out = ANSI.sub("", result.stdout)
    depth = n_layers_of(sessions["qwen2_vl"]) if with_model else 28  # the default model's real depth
    assert (f"({depth} LLM layers)" if with_model else "Qwen/Qwen2-VL-2B-Instruct (28 LLM layers)") in out
    assert f"N = {n_visual} visual tokens" in out
    rows = _preset_rows(out)
    assert sorted(rows) == ["1_3", "1_9", "2_9", "none"]
    expected = api.preset_table(model=str(tiny_models["qwen2_vl"]) if with_model else None, n_visual=n_visual,
                                offline=True)
    assert len(expected) == 4
    for row in expected:
        assert rows[row.name][:6] == _expected_cells(row)
    none = rows["none"]
    assert none[3:6] == [str(n_visual)] * 3
    for name in ("1_3", "2_9", "1_9"):
        V = int(rows[name][3])
        Rs, Rd = (int(c.split("@")[0]) for c in rows[name][4:6])
        assert n_visual > V >= Rs >= Rd >= 1


def test_presets_bad_model_and_bad_n(tmp_path):
    result = invoke("presets", "--model", tmp_path / "no-such-model", "--offline")
    assert_one_line_failure(result, 2, "no-such-model")
    result = invoke("presets", "--visual-tokens", "0")
    assert_one_line_failure(result, 2, "--visual-tokens")


# --------------------------------------------------------------------------------------------
# dev make-model
# --------------------------------------------------------------------------------------------


def test_make_model_writes_a_loadable_checkpoint(tmp_path, tiny_models):
    out = tmp_path / "qwen-made"
    proc = run_cli(["dev", "make-model", "qwen2_vl", out], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    # one line (no "Writing model shards" progress bar, not wrapped at 80 columns)
    assert proc.stderr.strip().splitlines() == [f"wrote qwen2_vl (tiny) random-weight checkpoint to {out}"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (out / name).is_file(), name
    session = api.load(str(out), device="cpu", offline=True)
    assert session.model_type == "qwen2_vl"
    result = session.ask(IMAGE, QUESTION, preset="none", max_new_tokens=2)
    assert 1 <= result.tokens.generated <= 2
    # Deterministic: the default seed gives the same weights as the fixture's checkpoint.
    from safetensors.torch import load_file

    made, fixture = load_file(out / "model.safetensors"), load_file(tiny_models["qwen2_vl"] / "model.safetensors")
    assert made.keys() == fixture.keys()
    assert all(torch.equal(made[k], fixture[k]) for k in made)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["no_such_family", "{tmp}/x"], ["unknown model family 'no_such_family'", "qwen2_vl", "llava_onevision"]),
        (["qwen2_vl", "{tmp}/x", "--size", "huge"], ["unknown size 'huge'", "tiny", "bench"]),
        (["qwen2_vl", "{tmp}/a-file"], ["a-file", "not a folder"]),
    ],
    ids=["family", "size", "out-is-a-file"],
)
def test_make_model_bad_input(tmp_path, args, needles):
    (tmp_path / "a-file").write_text("x")
    result = invoke("dev", "make-model", *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert_one_line_failure(result, 2, *needles)
    assert not (tmp_path / "x").exists()
