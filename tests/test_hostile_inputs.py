"""Hostile and accidental input (issue 8): bounded resources, no foreign code, clean signals, exit 2.

Each test names the input that used to misbehave (a 10 MB question, an alias-bomb preset, a model
folder shipping Python, SIGTERM, an absurd --seed ...) and checks that it now ends in one line on
stderr with the documented exit status, using no more than bounded memory.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from child_memory import run_measured
from test_api import CLIP, FRAMES, QUESTION
from test_cli import ANSI, assert_one_line_failure, invoke, run_cli, subprocess_env
from vitcop_cli import api
from vitcop_cli.catalog import MODEL_TYPES
from vitcop_cli.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
EVIL_CODE = """
import pathlib
pathlib.Path(__file__).with_name("MARKER").write_text("foreign code ran")
from transformers import PretrainedConfig
class EvilConfig(PretrainedConfig):
    model_type = "evil_vlm"
"""


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("api.load must not be called")

    monkeypatch.setattr(api, "load", refuse)


def _ask(model, *extra, media=CLIP, question=QUESTION):
    return invoke("ask", media, question, "--model", model, "--offline", "--frames", FRAMES, *extra)


# --------------------------------------------------------------------------------------------
# foreign code: a checkpoint's Python never runs, whatever stdin says
# --------------------------------------------------------------------------------------------


@pytest.fixture
def evil_folders(tmp_path, tiny_models):
    """An unknown model_type with auto_map + code, and a supported type whose files point at code."""
    unknown = tmp_path / "unknown-type"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({
        "model_type": "evil_vlm",
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForImageTextToText": "evil.EvilModel"},
    }))
    (unknown / "evil.py").write_text(EVIL_CODE)
    known = tmp_path / "known-type"
    shutil.copytree(tiny_models["qwen2_vl"], known)
    (known / "evil.py").write_text(EVIL_CODE)
    for name, auto_map in (
        ("config.json", {"AutoConfig": "evil.EvilConfig", "AutoModelForImageTextToText": "evil.EvilModel"}),
        ("processor_config.json", {"AutoProcessor": "evil.EvilProcessor"}),
        ("tokenizer_config.json", {"AutoTokenizer": ["evil.EvilTokenizer", None]}),
    ):
        data = json.loads((known / name).read_text())
        data["auto_map"] = auto_map
        (known / name).write_text(json.dumps(data))
    return unknown, known


@pytest.mark.parametrize("stdin", ["y\n", "yes\ny\ny\n", ""])
def test_foreign_code_never_runs_for_an_unknown_model_type(evil_folders, tmp_path, stdin):
    unknown, _ = evil_folders
    for args in (["ask", CLIP, QUESTION, "--model", unknown, "--frames", FRAMES], ["presets", "--model", unknown]):
        proc = subprocess.run(
            [sys.executable, "-m", "vitcop_cli", *map(str, args)], input=stdin, cwd=tmp_path,
            env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"error: {unknown}: model_type 'evil_vlm' is not supported; supported: {', '.join(MODEL_TYPES)}"
        ]
        assert "custom code" not in proc.stdout + proc.stderr
        assert not (unknown / "MARKER").exists()


def test_foreign_code_never_runs_for_a_supported_type_with_auto_map(evil_folders, tmp_path):
    _, known = evil_folders
    proc = subprocess.run(
        [sys.executable, "-m", "vitcop_cli", "ask", str(CLIP), QUESTION, "--model", str(known), "--frames", str(FRAMES),
         "--max-new-tokens", "1", "--json"],
        input="y\ny\ny\n", cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert not (known / "MARKER").exists()
    assert "custom code" not in proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr  # transformers' own Qwen2-VL classes load it
    assert json.loads(proc.stdout)["model_type"] == "qwen2_vl"


def test_every_from_pretrained_gets_trust_remote_code_false(monkeypatch, tiny_models):
    import transformers

    seen = []
    for name in ("AutoConfig", "AutoProcessor", "AutoModelForImageTextToText"):
        cls = getattr(transformers, name)
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _name=name, _original=original, **kwargs):
            seen.append((_name, kwargs.get("trust_remote_code", "missing")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    api.load(str(tiny_models["qwen2_vl"]), device="cpu", offline=True)
    assert {n for n, _ in seen} == {"AutoConfig", "AutoProcessor", "AutoModelForImageTextToText"}
    assert all(value is False for _, value in seen), seen


def test_the_model_type_is_checked_before_transformers_reads_anything(monkeypatch, evil_folders):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained must not run for an unsupported model_type")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", refuse)
    unknown, _ = evil_folders
    with pytest.raises(InputError, match="model_type 'evil_vlm' is not supported"):
        api.load(str(unknown), device="cpu")


# --------------------------------------------------------------------------------------------
# resources: prompt length, max-new-tokens, YAML presets
# --------------------------------------------------------------------------------------------


def test_ten_megabyte_question_on_stdin_is_refused_with_bounded_memory(tmp_path, tiny_models):
    question = tmp_path / "question.txt"
    question.write_text("why " * (10 * 2**20 // 4))
    with open(question) as stdin, open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        code, peak = run_measured(  # this child's own peak RSS, not the test process's
            [sys.executable, "-m", "vitcop_cli", "ask", str(CLIP), "-", "--model", str(tiny_models["qwen2_vl"]),
             "--frames", str(FRAMES)], tmp_path / "peak",
            stdin=stdin, stdout=out, stderr=err, cwd=tmp_path, env=subprocess_env(tmp_path),
        )
    stderr = (tmp_path / "err").read_text()
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "question on stdin is 1,000,001 characters long; the limit is 1,000,000" in lines[0]
    assert peak < 2**30, f"peak RSS {peak / 2**20:.0f} MiB"


def test_ten_megabyte_question_argument_is_refused_before_loading(no_model_loading):
    result = invoke("ask", CLIP, "why " * (10 * 2**20 // 4), "--model", "x")
    assert_one_line_failure(result, 2, "the question is 10,485,760 characters long")


def test_library_refuses_a_huge_question_before_tokenising(sessions):
    session = sessions["qwen2_vl"]
    with pytest.raises(InputError, match="characters long"):
        session.ask(CLIP, "x" * 1_000_001, frames=4, max_new_tokens=1)
    with pytest.raises(InputError, match="system prompt"):
        session.ask(CLIP, "ok?", system="x" * 1_000_001, frames=4, max_new_tokens=1)


def test_library_refuses_a_huge_chat_message_before_tokenising(sessions, monkeypatch):
    """Multi-turn chats (the server's path) are bounded too, in every turn, before the chat template runs."""
    from vitcop_cli.media.video import load_visual

    session = sessions["qwen2_vl"]
    monkeypatch.setattr(session.processor, "apply_chat_template", lambda *a, **k: pytest.fail("tokenised"))
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "x" * 1_000_001}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "ok?"}]},
    ]
    with pytest.raises(InputError, match="a message is 1,000,001 characters long"):
        session.prepare_chat(load_visual(CLIP, frames=4), messages)


@pytest.fixture(scope="module")
def short_context_model(tiny_models, tmp_path_factory):
    """The tiny Qwen2-VL with only 512 positions, so a modest question overflows it."""
    folder = tmp_path_factory.mktemp("short") / "qwen-512"
    shutil.copytree(tiny_models["qwen2_vl"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 512
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_prompt_longer_than_the_models_positions_is_refused(short_context_model):
    result = _ask(short_context_model, "--max-new-tokens", "4", question="what is this? " * 300)
    line = assert_one_line_failure(result, 2, "the prompt is", "exceeds the model's 512 positions")
    assert "--max-new-tokens 4" in line
    # the question alone fits, but not with a long answer
    result = _ask(short_context_model, "--max-new-tokens", "450", question="what is this?")
    assert_one_line_failure(result, 2, "exceeds the model's 512 positions")


@pytest.mark.parametrize("n", ["1000000000", "32768"])
def test_max_new_tokens_bounded_by_the_models_positions(tiny_models, n):
    result = _ask(tiny_models["qwen2_vl"], "--max-new-tokens", n)
    assert_one_line_failure(result, 2, f"--max-new-tokens {int(n):,} does not fit the model's 32,768 positions")


def test_library_bounds_prompt_plus_answer(sessions):
    session = sessions["qwen2_vl"]
    assert session.max_positions == 32768
    with pytest.raises(InputError, match="does not fit"):
        session.ask(CLIP, "ok?", frames=4, max_new_tokens=10**9)
    prepared = session.prepare(__import__("vitcop_cli.media.video", fromlist=["x"]).load_visual(CLIP, frames=4), "ok?")
    prompt = prepared.inputs["input_ids"].shape[1]
    with pytest.raises(InputError, match="the prompt is"):
        session.generate(prepared, preset="none", max_new_tokens=32768 - prompt + 1)


ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
ratio: [*f,*f,*f,*f,*f,*f,*f,*f,*f]
vision_keep: 0.5
cluster_fraction: 0.5
"""


def test_yaml_alias_bomb_is_refused_structurally(tmp_path, no_model_loading, monkeypatch):
    """A few hundred bytes of nested aliases never expand: the alias itself is refused, in one short line."""
    import yaml

    def no_expansion(*args, **kwargs):
        raise AssertionError("the document must be refused before yaml builds it")

    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    monkeypatch.setattr(yaml, "safe_load", no_expansion)
    result = invoke("ask", CLIP, QUESTION, "--model", "x", "--preset", path)
    line = assert_one_line_failure(result, 2, str(path), "YAML aliases", "not allowed")
    assert len(line) < 200


def test_oversized_preset_and_long_values_give_short_messages(tmp_path, no_model_loading):
    big = tmp_path / "big.yaml"
    big.write_text("ratio: 0.3\nvision_keep: 0.5\ncluster_fraction: 0.5\ndescription: '" + "x" * 20_000 + "'\n")
    assert_one_line_failure(invoke("ask", CLIP, QUESTION, "--model", "x", "--preset", big), 2, "too large for a preset")
    long_value = tmp_path / "long.yaml"
    long_value.write_text("ratio: [" + ",".join(["123456789"] * 1200) + "]\nvision_keep: 0.5\ncluster_fraction: 0.5\n")
    line = assert_one_line_failure(invoke("ask", CLIP, QUESTION, "--model", "x", "--preset", long_value), 2, "ratio")
    assert len(line) < len(str(long_value)) + 150, line
    odd_key = tmp_path / "key.yaml"
    odd_key.write_text("ratio: 0.3\nvision_keep: 0.5\ncluster_fraction: 0.5\n" + "k" * 1000 + ": 1\n")
    line = assert_one_line_failure(invoke("ask", CLIP, QUESTION, "--model", "x", "--preset", odd_key), 2, "unknown key")
    assert len(line) < len(str(odd_key)) + 250, line


def test_preset_that_is_not_utf8_names_the_file(tmp_path, no_model_loading):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("ratio: 0.3\nvision_keep: 0.5\ncluster_fraction: 0.5\ndescription: 'caf\xe9'\n".encode("latin-1"))
    assert_one_line_failure(invoke("ask", CLIP, QUESTION, "--model", "x", "--preset", path), 2, str(path), "not UTF-8")


@pytest.mark.parametrize(
    "option, value",
    [("--temperature", "nan"), ("--temperature", "inf"), ("--top-p", "nan"), ("--fps", "inf"), ("--fps", "nan")],
)
def test_non_finite_floats_are_refused(no_model_loading, option, value):
    extra = ["--temperature", "0.5"] if option == "--top-p" else []
    result = invoke("ask", CLIP, QUESTION, "--model", "x", option, value, *extra)
    assert_one_line_failure(result, 2, option, "finite")
    result = invoke("profile", CLIP, "--model", "x", option, value, *extra)
    assert_one_line_failure(result, 2, option, "finite")


@pytest.mark.parametrize("kwargs", [{"temperature": math.nan}, {"temperature": math.inf},
                                    {"temperature": 0.5, "top_p": math.nan}])
def test_library_refuses_non_finite_floats(sessions, kwargs):
    with pytest.raises(InputError, match="finite"):
        sessions["qwen2_vl"].ask(CLIP, "ok?", frames=4, max_new_tokens=1, **kwargs)


# --------------------------------------------------------------------------------------------
# exit 1 that should be exit 2
# --------------------------------------------------------------------------------------------


def test_preset_whose_layers_do_not_fit_is_exit_2_up_front(tmp_path, tiny_models, monkeypatch):
    path = tmp_path / "deep.yaml"
    path.write_text("ratio: 0.3\nvision_keep: 0.5\ncluster_fraction: 0.5\nshallow_layer: 100\n")
    import vitcop_cli.media.video as video

    def no_decoding(*args, **kwargs):
        raise AssertionError("the preset must be refused before any clip is decoded")

    monkeypatch.setattr(video, "load_visual", no_decoding)
    import vitcop_cli.session.ingest as ingest  # Session.ask decodes through this name

    monkeypatch.setattr(ingest, "load_visual", no_decoding)
    model = tiny_models["qwen2_vl"]
    assert_one_line_failure(_ask(model, "--preset", path), 2, "shallow_layer (100)", "8 decoder layer")
    result = invoke("profile", CLIP, "--model", model, "--offline", "--preset", f"none,{path}", "--repeat", "1")
    assert_one_line_failure(result, 2, "shallow_layer (100)", "8 decoder layer")


def test_presets_with_an_unsupported_model_says_so(tmp_path, tiny_models):
    folder = tmp_path / "text-only"
    shutil.copytree(tiny_models["qwen2_vl"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "qwen2"
    (folder / "config.json").write_text(json.dumps(config))
    result = invoke("presets", "--model", folder, "--offline")
    assert_one_line_failure(result, 2, "model_type 'qwen2' is not supported", "qwen2_vl", "llava_onevision")


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1"])
def test_make_model_seed_out_of_range_names_the_option(tmp_path, seed):
    result = invoke("dev", "make-model", "qwen2_vl", tmp_path / "m", "--seed", seed)
    assert_one_line_failure(result, 2, "--seed", "0 to 9223372036854775807")
    assert not (tmp_path / "m").exists()


def test_make_model_files_share_one_mode(tmp_path):
    from vitcop_cli.models.devmodels import make_model

    out = make_model("qwen2_vl", tmp_path / "m")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1, modes
    assert modes["model.safetensors"] == modes["config.json"]


# --------------------------------------------------------------------------------------------
# signals: SIGTERM / SIGHUP behave like Ctrl-C with the shell's status
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_terminate_as_interrupt(name, code):
    from vitcop_cli.cli.signals import Terminated, terminate_as_interrupt

    signum = getattr(signal, name)
    before = signal.getsignal(signum)
    with pytest.raises(Terminated) as info:
        with terminate_as_interrupt():
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises at the next bytecode
    assert isinstance(info.value, KeyboardInterrupt)
    assert (info.value.signal_name, info.value.exit_code) == (name, code)
    assert signal.getsignal(signum) == before  # restored


@pytest.mark.parametrize("command", ["ask", "profile"])
@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_ask_and_profile_exit_with_the_signal_status(monkeypatch, command, name, code):
    def signalled_while_loading(*args, **kwargs):
        os.kill(os.getpid(), getattr(signal, name))
        time.sleep(5)
        raise AssertionError("the signal should have interrupted loading")

    from vitcop_cli.models import model_ref

    monkeypatch.setattr(api, "load", signalled_while_loading)
    monkeypatch.setattr(model_ref, "declared_config", lambda model, offline=False: ({"model_type": "qwen2_vl"}, offline))
    args = ["ask", CLIP, QUESTION] if command == "ask" else ["profile", CLIP]
    result = invoke(*args, "--model", "x")
    assert result.exit_code == code, (result.output, result.exception)
    assert ANSI.sub("", result.stderr).strip() == f"terminated by {name}"


def test_sigterm_in_a_real_process(tmp_path, tiny_models):
    """The status a shell sees: 143, one line, no traceback (the model load is replaced by a wait)."""
    script = (
        "import os, signal, sys, time\n"
        "from vitcop_cli import api\n"
        "def load(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)\n"
        "api.load = load\n"
        "from vitcop_cli.app import main\n"
        f"sys.argv = ['vitcop', 'ask', {str(CLIP)!r}, 'q', '--model', {str(tiny_models['qwen2_vl'])!r}]\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=subprocess_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip() == "terminated by SIGTERM"


# --------------------------------------------------------------------------------------------
# model references: path-like, offline, no network
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["./models/nope", "~/no-such-vitcop-model", "/no/such/model", "models/nope"])
def test_path_like_model_that_does_not_exist(tmp_path, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # "models/nope": the parent exists, so it is a path, not a hub id
    with pytest.raises(InputError, match=f"^no such model folder {model}$"):
        api.load(model, device="cpu")
    result = invoke("ask", CLIP, QUESTION, "--model", model, "--frames", FRAMES)
    assert_one_line_failure(result, 2, f"no such model folder {model}")


def test_hub_id_without_network_fails_fast_in_one_line(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}"}  # nothing listens: "no network"
    proc = run_cli(["ask", CLIP, QUESTION, "--model", "some-org/not-cached-model", "--frames", FRAMES], tmp_path, **env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "'some-org/not-cached-model' is not in the local Hugging Face cache" in lines[0]
    assert "cannot be reached" in lines[0] and "Retrying" not in proc.stderr


def test_device_mps_without_mps(tiny_models):
    from vitcop_cli.session.runtime import mps_available, resolve_dtype

    if mps_available():
        pytest.skip("this machine has MPS")
    assert_one_line_failure(_ask(tiny_models["qwen2_vl"], "--device", "mps"), 2, "--device mps", "MPS is not available")
    import torch

    assert resolve_dtype("auto", torch.device("mps")) == torch.float16


# --------------------------------------------------------------------------------------------
# batch: a prompt too long for the model is that item's error line, and the batch goes on
# --------------------------------------------------------------------------------------------


def test_batch_prompt_longer_than_the_positions_is_an_error_line_per_item(short_context_model, tmp_path):
    """Two clips with an over-long question fail as two error lines (the prompt-length message); the
    short question after them still runs: the batch is not aborted, and exits 1 (some failed)."""
    long_question = "what is this? " * 300
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps(line) + "\n" for line in (
        {"id": "long-shapes", "video": str(CLIP), "question": long_question},
        {"id": "long-bounce", "video": str(CLIP.with_name("bounce.mp4")), "question": long_question},
        {"id": "short", "video": str(CLIP), "question": "what is this?"},
    )))
    out = tmp_path / "out.jsonl"
    result = invoke("batch", q, "-o", out, "-m", short_context_model, "--offline", "--frames", FRAMES,
                    "-p", "none", "--max-new-tokens", "4", "--json")
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Traceback" not in result.output
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["failed"]) == (1, 2), summary
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(records) == ["long-bounce", "long-shapes", "short"]
    for rid in ("long-shapes", "long-bounce"):
        error = records[rid]["error"]
        assert error and "\n" not in error, error
        assert "the prompt is" in error and "exceeds the model's 512 positions" in error, error
        assert "--max-new-tokens 4" in error and records[rid]["answer"] is None
    assert records["short"]["error"] is None and isinstance(records["short"]["answer"], str)
    stderr = ANSI.sub("", result.stderr)
    assert stderr.count("exceeds the model's 512 positions") == 2, stderr  # one progress line per failed job


# --------------------------------------------------------------------------------------------
# ask --frames N with an odd N: the documented rounding, said on stderr and in --json warnings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("asked, used", [(1, 2), (5, 4), (7, 8)])  # README: 1->2, 3->4, 5->4, 7->8
def test_ask_odd_frame_counts_warn_on_stderr_and_in_json(tiny_models, asked, used):
    result = invoke("ask", CLIP, QUESTION, "--model", tiny_models["qwen2_vl"], "--offline", "--frames", asked,
                    "--max-new-tokens", "1", "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    data = json.loads(result.stdout)
    assert data["visual"]["frames"] == used
    expected = (f"--frames {asked}: using {used} frames; "
                "frame counts are rounded to an even number (frames are paired into temporal patches)")
    assert expected in data["warnings"], data["warnings"]
    assert f"warning: {expected}" in ANSI.sub("", result.stderr).splitlines(), result.stderr
