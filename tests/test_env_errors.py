"""A broken environment is reported as one (issue 19): the package and its version, a pointer to
``vitcop doctor``, exit 1 — never "not a loadable checkpoint folder" (exit 2) — and ``vitcop doctor``
reports an unimportable transformers as a FAIL line instead of crashing.

The broken transformers is a stub package that raises on import, put first on the PYTHONPATH of a
real ``vitcop`` process; a transformers whose own dependency is missing is simulated by making
``from_pretrained`` raise what such a release raises.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from test_cli import ANSI, assert_one_line_failure, invoke, subprocess_env
from vitcop_cli import environment
from vitcop_cli.errors import EnvironmentProblem, InputError

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "samples" / "shapes.mp4"
TRANSFORMERS = metadata.version("transformers")
STUB_ERROR = "cannot import name 'is_offline_mode' from 'huggingface_hub' (stub)"


@pytest.fixture
def broken_transformers(tmp_path) -> dict:
    """The environment of a process whose ``import transformers`` raises (a stub package first on the path)."""
    stub = tmp_path / "stub" / "transformers"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(f"raise ImportError({STUB_ERROR!r})\n")
    env = subprocess_env(tmp_path, VITCOP_CACHE=tmp_path / "cache")
    env["PYTHONPATH"] = f"{stub.parent}:{env['PYTHONPATH']}"
    return env


def _vitcop(tmp_path, env, *args):
    return subprocess.run([sys.executable, "-m", "vitcop_cli", *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_ask_with_an_unimportable_transformers_blames_the_environment(tmp_path, broken_transformers):
    proc = _vitcop(tmp_path, broken_transformers, "ask", CLIP, "What happens?", "--model", "tiny:qwen2_vl",
                   "--preset", "1_9")
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    (line,) = ANSI.sub("", proc.stderr).strip().splitlines()
    assert line.startswith(f"error: transformers {TRANSFORMERS} cannot be imported (ImportError: {STUB_ERROR})")
    assert "not with the model" in line and "run 'vitcop doctor'" in line
    assert "checkpoint" not in line


def test_doctor_reports_an_unimportable_transformers_as_a_fail_line(tmp_path, broken_transformers):
    proc = _vitcop(tmp_path, broken_transformers, "doctor")
    assert proc.returncode == 1, proc.stderr
    out = ANSI.sub("", proc.stdout)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert f"FAIL environment: transformers {TRANSFORMERS} cannot be imported" in " ".join(out.split())
    assert "no self-test ran" in out and "PASS" not in out
    assert "tiny:qwen2_vl" in out  # the demo models are listed all the same
    report = json.loads(_vitcop(tmp_path, broken_transformers, "doctor", "--json").stdout)
    assert report["passed"] is False and report["checks"] == []
    assert len(report["problems"]) == 1 and STUB_ERROR in report["problems"][0]


def test_doctor_lists_the_demo_models(monkeypatch, tmp_path):
    from vitcop_cli.models import demo_models
    from vitcop_cli.doctor import checks as doctor

    monkeypatch.setenv("VITCOP_CACHE", str(tmp_path))
    monkeypatch.setattr(doctor, "run", lambda device, families=(), on_check=None, report=None: report)
    result = invoke("doctor", env={"COLUMNS": "400"})
    out = ANSI.sub("", result.stdout)
    assert all(name in out for name in demo_models.names()), out
    report = json.loads(invoke("doctor", "--json").stdout)
    assert [d["name"] for d in report["demo_models"]] == demo_models.names() and report["problems"] == []


# ---- a transformers that fails while loading (its own dependencies) -------------------------
KERNELS = ("Kernels are not available. Please install a compatible version (0.4.0 <= version < 0.5.0), "
           "e.g. `pip install kernels==0.4.0`")


@pytest.mark.parametrize("raised, needle", [
    (ValueError(KERNELS), "Kernels are not available"),
    (ModuleNotFoundError("No module named 'kernels'", name="kernels"), "its dependency 'kernels' is missing"),
    (RuntimeError("Failed to import transformers.models.qwen2_vl.modeling_qwen2_vl because of the following error"),
     "Failed to import"),
])
def test_a_loading_failure_from_the_environment_is_not_blamed_on_the_checkpoint(monkeypatch, tiny_models, raised,
                                                                                needle):
    import transformers

    def broken(*args, **kwargs):
        raise raised

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", broken)
    model = tiny_models["qwen2_vl"]
    result = invoke("ask", CLIP, "What happens?", "--model", model, "--offline", "--frames", 4)
    line = assert_one_line_failure(result, 1, f"transformers {TRANSFORMERS} failed while loading {model}", needle,
                                   "run 'vitcop doctor'")
    assert "not a loadable checkpoint" not in line


def test_a_broken_checkpoint_is_still_the_checkpoints_fault(monkeypatch, tiny_models):
    import transformers

    def corrupt(*args, **kwargs):
        raise OSError("Unable to load weights from safetensors file: header too large")

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", corrupt)
    model = tiny_models["qwen2_vl"]
    result = invoke("ask", CLIP, "What happens?", "--model", model, "--offline", "--frames", 4)
    assert_one_line_failure(result, 2, f"{model}: not a loadable checkpoint folder (Unable to load weights")


# ---- the helpers ---------------------------------------------------------------------------
def test_importing_names_the_package_version_and_doctor():
    with pytest.raises(EnvironmentProblem) as info:
        with environment.importing("torch"):
            raise OSError("libcudart.so.13: cannot open shared object file")
    message = str(info.value)
    assert message.startswith(f"torch {metadata.version('torch')} cannot be imported (OSError: libcudart.so.13")
    assert "vitcop doctor" in message and info.value.exit_code == 1


def test_importing_lets_vitcop_errors_and_interrupts_through():
    with pytest.raises(InputError):
        with environment.importing("transformers"):
            raise InputError("mine")
    with pytest.raises(KeyboardInterrupt):
        with environment.importing("transformers"):
            raise KeyboardInterrupt


def test_an_uninstalled_package_says_so():
    message = environment.describe("no_such_package_xyz", ModuleNotFoundError("No module named 'no_such_package_xyz'",
                                                                              name="no_such_package_xyz"))
    assert message.startswith("no_such_package_xyz (not installed) cannot be imported (ModuleNotFoundError")


@pytest.mark.parametrize("exc, expected", [
    (ImportError("x"), True),
    (ValueError(KERNELS), True),
    (ValueError("This model requires the protobuf library but it was not found"), True),
    (OSError("Error no file named model.safetensors found in directory"), False),
    (ValueError("Unrecognized configuration class"), False),
])
def test_which_loading_errors_blame_the_environment(exc, expected):
    assert environment.is_environment_error(exc) is expected


def test_decord_that_does_not_import_is_an_environment_problem(monkeypatch):
    from vitcop_cli.media import video

    monkeypatch.setitem(sys.modules, "decord", None)  # "import decord" raises ImportError
    with pytest.raises(EnvironmentProblem, match=r"decord \S+ cannot be imported"):
        video.load_visual(CLIP, frames=2)
