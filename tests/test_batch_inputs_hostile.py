"""Hostile inputs to ``vitcop batch`` (issues 8 and 10): a questions file with a 10 MB line, and the
``VITCOP_PRESET`` default honoured by ``batch`` as it is by ``ask`` (the flag wins).

The 10 MB line runs the real command in a child process and measures that child's own peak RSS
(``os.wait4``), as tests/test_hostile_inputs.py does for a 10 MB question on stdin. No timing assertions.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from child_memory import run_measured
from test_api import CLIP, FRAMES
from test_cli import ANSI, assert_one_line_failure, invoke, subprocess_env
from vitcop_cli import api, options
from vitcop_cli.models import model_ref
from vitcop_cli.questions.inputs import MAX_LINE_BYTES
from vitcop_cli.errors import InputError

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


# --------------------------------------------------------------------------------------------
# a questions-file line of 10 MB: one line naming it, exit 2, bounded memory, nothing written
# --------------------------------------------------------------------------------------------


def test_ten_megabyte_questions_line_is_refused_with_bounded_memory(tmp_path, tiny_models):
    """Without the per-line limit the 10 MB question would be parsed, the model loaded and the question
    tokenised (13 GB in the issue's run), or at best end as an error line with exit 1."""
    assert MAX_LINE_BYTES == 2**20  # the documented 1 MiB
    q = tmp_path / "q.jsonl"
    with open(q, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"video": str(CLIP), "question": "What moves?"}) + "\n")
        fh.write(json.dumps({"video": str(CLIP), "question": "why " * (10 * 2**20 // 4)}) + "\n")
    assert q.stat().st_size > 10 * 2**20
    out = tmp_path / "out.jsonl"
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        code, peak = run_measured(  # this child's own peak RSS, not the test process's
            [sys.executable, "-m", "vitcop_cli", "batch", str(q), "-o", str(out), "-m", str(tiny_models["qwen2_vl"]),
             "--offline", "--frames", str(FRAMES)], tmp_path / "peak",
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=tmp_path, env=subprocess_env(tmp_path),
        )
    err = ANSI.sub("", (tmp_path / "stderr").read_text())
    assert code == 2, err
    assert "Traceback" not in err and (tmp_path / "stdout").read_text() == ""
    lines = err.strip().splitlines()
    assert lines == [f"error: {q}: 1 bad line: line 2: longer than {MAX_LINE_BYTES} bytes"], lines
    assert not out.exists() and not list(tmp_path.glob("out.jsonl.*"))  # refused before the lock or a part file
    # the bound; importing torch alone is ~650 MiB of it (the refusal itself reads at most 1 MiB a line)
    assert peak < 2**30, f"peak RSS {peak / 2**20:.0f} MiB"


# --------------------------------------------------------------------------------------------
# VITCOP_PRESET is batch's default too; the flag wins
# --------------------------------------------------------------------------------------------


@pytest.fixture
def one_image(tmp_path) -> Path:
    root = tmp_path / "one"
    root.mkdir()
    shutil.copy(SAMPLES / "scene.png", root / "scene.png")
    return root


@pytest.fixture
def captured_presets(monkeypatch):
    """The preset list batch validates (its first check, before any model loads), then stop with exit 2."""
    seen = []

    def check(presets, methods, **kwargs):
        seen.append(list(presets))
        raise InputError("captured")

    monkeypatch.setattr(options, "check_run_options", check)  # batch's CLI checks through vitcop_cli.options
    monkeypatch.setattr(api, "load", lambda *a, **k: pytest.fail("api.load must not be called"))
    monkeypatch.setattr(model_ref, "declared_config",
                        lambda model, offline=False: ({"model_type": "qwen2_vl"}, offline))
    return seen


@pytest.mark.parametrize(
    "env, flag, expected",
    [
        ({}, [], ["1_3"]),  # the built-in default
        ({"VITCOP_PRESET": "2_9"}, [], ["2_9"]),
        ({"VITCOP_PRESET": "none,1_9"}, [], ["none", "1_9"]),  # a comma list, like the flag
        ({"VITCOP_PRESET": "2_9"}, ["-p", "1_9"], ["1_9"]),
        ({"VITCOP_PRESET": "2_9"}, ["--presets", "none"], ["none"]),
    ],
)
def test_batch_takes_its_preset_from_the_environment_and_the_flag_wins(captured_presets, one_image, tmp_path,
                                                                       env, flag, expected):
    env = {"VITCOP_PRESET": None, **env}  # None: unset, whatever the calling shell exports
    result = invoke("batch", one_image, "-q", "Q", "-o", tmp_path / "o.jsonl", "-m", "m", *flag, env=env)
    assert_one_line_failure(result, 2, "captured")
    assert captured_presets == [expected]


def test_batch_results_carry_the_preset_from_the_environment(tiny_models, one_image, tmp_path):
    """End to end: the records written are labelled with (and ran) the env's preset, not the default 1_3."""
    out = tmp_path / "o.jsonl"
    result = invoke("batch", one_image, "-q", "Q", "-o", out, "-m", tiny_models["qwen2_vl"], "--offline",
                    "--max-new-tokens", "1", "--json", env={"VITCOP_PRESET": "none"})
    assert result.exit_code == 0, (result.output, result.exception)
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert [(r["preset"], r["error"]) for r in records] == [("none", None)]
