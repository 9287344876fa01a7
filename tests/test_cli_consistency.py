"""One consistent, self-describing CLI (issue 10): spellings, env defaults, --version, fast static
commands, help at 80 columns, the --json schema and its README table, stdin questions, frame-count
warnings, seeds, the report's start-up row and legend, and the profile plot's readability."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from test_api import CLIP, QUESTION
from test_cli import ANSI, assert_one_line_failure, invoke, subprocess_env
from vitcop_cli import api, options
from vitcop_cli.models import model_ref
from vitcop_cli.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture
def capture(monkeypatch):
    """Record what the CLI would run (check_run_options' and load's arguments) and stop there."""
    seen = {}

    def check(presets, methods, **kwargs):
        seen.update(presets=list(presets), methods=list(methods), **kwargs)
        return [], list(methods)

    def load(model, **kwargs):
        seen.update(model=model, **kwargs)
        raise InputError("captured")

    monkeypatch.setattr(options, "check_run_options", check)
    monkeypatch.setattr(api, "load", load)
    monkeypatch.setattr(model_ref, "declared_config", lambda model, offline=False: ({"model_type": "qwen2_vl"}, offline))
    return seen


# --------------------------------------------------------------------------------------------
# --version, python -m vitcop_cli, fast static commands
# --------------------------------------------------------------------------------------------


def test_version():
    from vitcop_cli import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"vitcop {__version__}"


FAST = [["--version"], ["--help"], ["presets"], ["methods"], ["ask", "--help"], ["profile", "--help"]]


@pytest.mark.parametrize("args", FAST, ids=[" ".join(a) for a in FAST])
def test_static_commands_never_import_torch_or_transformers(tmp_path, args):
    """`python -m vitcop_cli` works, and the static answers never import the seconds-long libraries."""
    script = (
        "import sys, runpy\n"
        f"sys.argv = ['vitcop', *{args!r}]\n"
        "try:\n"
        "    runpy.run_module('vitcop_cli', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    code = e.code or 0\n"
        "else:\n"
        "    code = 0\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy), 'CODE=' + str(code), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=subprocess_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "HEAVY= CODE=0", proc.stderr
    assert proc.stdout.strip()


def test_python_dash_m_runs_the_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vitcop_cli", "methods"], cwd=tmp_path,
                          env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "vitcop" in proc.stdout and "fastv" in proc.stdout


def test_catalog_matches_the_live_registries():
    from pruning.adapters import supported_model_types
    from pruning.methods import method_class, method_names
    from vitcop_cli.catalog import METHODS, MODEL_TYPES

    assert list(METHODS) == method_names()
    assert {m: method_class(m).description for m in method_names()} == METHODS
    assert sorted(MODEL_TYPES) == supported_model_types()


def test_presets_without_model_uses_the_default_models_depth():
    result = invoke("presets", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    out = ANSI.sub("", result.stdout)
    assert "Qwen/Qwen2-VL-2B-Instruct (28 LLM layers)" in out and "default model's depth" in out
    assert "@ 19" in out  # Ld = round(22/32 * 28) = 19
    assert "N: visual tokens from the vision encoder" in out and "Rd: kept from the deep layer" in out
    assert max(len(line) for line in out.splitlines()) <= 80


# --------------------------------------------------------------------------------------------
# spellings, comma lists, env defaults
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", [["-p", "1_9"], ["--preset", "1_9"]])
def test_ask_preset_and_method_spellings(capture, spelling):
    result = invoke("ask", CLIP, QUESTION, *spelling, "--method", "fastv", "--model", "m")
    assert_one_line_failure(result, 2, "captured")
    assert capture["presets"] == ["1_9"] and capture["methods"] == ["fastv"]


@pytest.mark.parametrize(
    "args", [["-p", "1_3,1_9", "--method", "vitcop,fastv"], ["--presets", "1_3,1_9", "--methods", "vitcop,fastv"],
             ["--preset", "1_3,1_9", "--method", "vitcop,fastv"]],
    ids=["short", "plural-aliases", "singular"],
)
def test_profile_takes_the_same_spellings_with_comma_lists(capture, args):
    result = invoke("profile", CLIP, *args, "--model", "m", "--seed", "3", "--temperature", "0.5", "--top-p", "0.9",
                    "--system", "be brief")
    assert_one_line_failure(result, 2, "captured")
    assert capture["presets"] == ["1_3", "1_9"] and capture["methods"] == ["vitcop", "fastv"]
    assert (capture["seed"], capture["temperature"], capture["top_p"], capture["system"]) == (3, 0.5, 0.9, "be brief")


def test_ask_with_a_comma_list_points_to_profile_and_batch(no_load):
    result = invoke("ask", CLIP, QUESTION, "-p", "1_3,1_9", "--model", "m")
    assert_one_line_failure(result, 2, "ask runs one preset", "vitcop profile", "vitcop batch")
    result = invoke("ask", CLIP, QUESTION, "--method", "vitcop,fastv", "--model", "m")
    assert_one_line_failure(result, 2, "ask runs one method")


@pytest.fixture
def no_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("api.load must not be called")

    monkeypatch.setattr(api, "load", refuse)


def test_environment_defaults_and_the_flag_wins(capture):
    env = {"VITCOP_MODEL": "env-model", "VITCOP_PRESET": "2_9", "VITCOP_DEVICE": "cpu"}
    result = invoke("ask", CLIP, QUESTION, env=env)
    assert_one_line_failure(result, 2, "captured")
    assert (capture["model"], capture["presets"], capture["device"]) == ("env-model", ["2_9"], "cpu")
    result = invoke("ask", CLIP, QUESTION, "--model", "flag-model", "-p", "1_9", "--device", "auto", env=env)
    assert_one_line_failure(result, 2, "captured")
    assert (capture["model"], capture["presets"], capture["device"]) == ("flag-model", ["1_9"], "auto")


def test_help_documents_env_vars_completion_and_shows_no_bool_or_cut_defaults():
    for args in (["--help"], ["ask", "--help"], ["profile", "--help"], ["presets", "--help"], ["methods", "--help"],
                 ["dev", "make-model", "--help"], ["batch", "--help"]):
        result = invoke(*args, env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        out = ANSI.sub("", result.stdout)
        assert "<bool>" not in out, args
        assert max(len(line) for line in out.splitlines()) <= 80, args
        flat = re.sub(r"[\s│]+", "", out)
        for default in re.findall(r"\[default: ?([^\]]*)", flat):
            assert default and not default.endswith(("…", "...")), (args, default)
    root = ANSI.sub("", invoke("--help").stdout)
    assert "--install-completion" in root and "--version" in root
    ask_help = re.sub(r"[\s│]+", "", ANSI.sub("", invoke("ask", "--help", env={"COLUMNS": "80"}).stdout))
    for var in ("VITCOP_MODEL", "VITCOP_PRESET", "VITCOP_DEVICE"):
        assert var in ask_help
    assert "[default:Qwen/Qwen2-VL-2B-Instruct]" in ask_help


def test_readme_documents_completion_env_and_schema():
    for needle in ("--install-completion", "VITCOP_MODEL", "VITCOP_PRESET", "VITCOP_DEVICE", "python -m vitcop_cli",
                   '"schema": "vitcop.ask/2"', "--index-url https://download.pytorch.org/whl/cpu", "hf download"):
        assert needle in README, needle


# --------------------------------------------------------------------------------------------
# questions from stdin; frame-count warnings; seeds; schema; README field table
# --------------------------------------------------------------------------------------------


def _ask_json(model, *extra, input=None, question=QUESTION):
    result = invoke("ask", CLIP, question, "--model", model, "--offline", "--max-new-tokens", "4", "--json", *extra) \
        if input is None else _invoke_input(["ask", CLIP, question, "--model", model, "--offline",
                                             "--max-new-tokens", "4", "--json", *extra], input)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def _invoke_input(args, text):
    from typer.testing import CliRunner

    from vitcop_cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args], input=text, env={"NO_COLOR": "1"})


@pytest.fixture(scope="module")
def sampled(tiny_models):
    """Two sampled answers with one seed, one with another, and a --frames 3 run with the question on stdin."""
    model = tiny_models["qwen2_vl"]
    seeded = [_ask_json(model, "--frames", "4", "--temperature", "1.5", "--seed", s) for s in ("7", "7", "8")]
    stdin = _ask_json(model, "--frames", "3", input="What moves?\n", question="-")
    return seeded, stdin


def test_seed_makes_sampling_repeat_and_is_recorded(sampled):
    (a, b, c), _ = sampled
    assert a["seed"] == b["seed"] == 7 and c["seed"] == 8
    assert a["generated_ids"] == b["generated_ids"]
    assert a["schema"] == "vitcop.ask/2" and list(a)[0] == "schema"


def test_question_from_stdin_and_frame_adjustment_warning(sampled):
    _, d = sampled
    assert d["question"] == "What moves?"
    assert d["visual"]["frames"] == 4
    assert any(w.startswith("--frames 3: using 4 frames") for w in d["warnings"]), d["warnings"]


def test_empty_stdin_question(no_load):
    result = _invoke_input(["ask", CLIP, "-", "--model", "m"], "   \n")
    assert_one_line_failure(result, 2, "question is empty")


def _readme_fields() -> list[str]:
    block = README.split("<!-- ask-json-fields:start -->")[1].split("<!-- ask-json-fields:end -->")[0]
    return [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", block, flags=re.M)]


def test_readme_json_table_lists_exactly_the_ask_fields():
    """Add or rename a field of AskResult (or its parts) and this fails until README's table says so."""
    from vitcop_cli.result import json_fields

    documented = _readme_fields()
    assert len(documented) == len(set(documented)), "a field is listed twice"
    assert set(documented) == set(json_fields()), (
        sorted(set(json_fields()) - set(documented)), sorted(set(documented) - set(json_fields())))


def test_json_fields_of_a_real_result_are_the_documented_ones(sampled):
    from vitcop_cli.result import json_fields

    (d, _, _), _ = sampled

    def paths(obj, prefix=""):
        for k, v in obj.items():
            yield prefix + k
            if isinstance(v, dict) and k not in ("versions",):
                yield from paths(v, prefix + k + ".")

    assert set(paths(d)) == set(json_fields())


# --------------------------------------------------------------------------------------------
# the human report: start-up row, legend, 80 columns
# --------------------------------------------------------------------------------------------


def test_report_shows_start_up_apart_and_fits_80_columns(sessions):
    from vitcop_cli.cli import report

    result = sessions["qwen2_vl"].ask(CLIP, QUESTION, preset="1_9", frames=3, max_new_tokens=2)
    result.timings.startup_s = 6.25
    console = Console(width=80, record=True, color_system=None)
    report.render(result, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "start-up" in text and "6.250 s (imports" in text and "model load" in text
    assert "total (question)" in text
    assert "warning: --frames 3: using 4 frames" in " ".join(text.split())


def test_start_up_is_set_by_the_cli(tiny_models):
    d = _ask_json(tiny_models["qwen2_vl"], "--frames", "4")
    t = d["timings"]
    assert t["startup_s"] is not None and t["startup_s"] >= t["model_load_s"] > 0


# --------------------------------------------------------------------------------------------
# profile: ratio-miss marks, schema, plot readability
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fastv_profile(sessions):
    from vitcop_cli import profile as prof
    from vitcop_cli.media.video import load_visual

    session = sessions["qwen2_vl"]
    prepared = session.prepare(load_visual(CLIP, frames=4), QUESTION)
    return prof.run_profile(session, prepared, ["1_3", "1_9"], ["vitcop", "fastv"], repeat=1, warmup=0,
                            max_new_tokens=2, temperature=1.0, seed=11)


def test_profile_marks_rows_that_missed_their_ratio(fastv_profile):
    from vitcop_cli.profile.view import render_profile

    result = fastv_profile
    assert result.to_dict()["schema"] == "vitcop.profile/2"
    assert (result.temperature, result.seed) == (1.0, 11)
    assert all(r.answers_consistent for r in result.rows)  # seeded: every run samples the same way
    flagged = {(r.method, r.preset) for r in result.rows if r.ratio_warning}
    for r in result.rows:  # flagged exactly when the achieved ratio is more than 5% off the requested one
        off = r.method != "none" and abs(r.layer_averaged_ratio - r.target_ratio) > 0.05 * r.target_ratio
        assert ((r.method, r.preset) in flagged) == off, (r.method, r.preset, r.layer_averaged_ratio)
    console = Console(width=80, record=True, color_system=None)
    render_profile(result, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "N: visual tokens from the vision encoder" in " ".join(text.split())
    for method, preset in flagged:
        assert f"! {method} {preset}: " in text
    marks = sum(line.count("!") for line in text.splitlines() if re.search(r"\d\.\d{3}!", line))
    assert marks == len(flagged)


def test_profile_marks_a_flagged_row_from_saved_json(fastv_profile):
    from vitcop_cli.profile import ProfileResult
    from vitcop_cli.profile.view import render_profile

    d = fastv_profile.to_dict()
    d["rows"][1]["ratio_warning"] = "vitcop reached layer-averaged ratio 0.500, not the preset's 0.333"
    console = Console(width=80, record=True, color_system=None)
    render_profile(ProfileResult.from_dict(d), console)
    text = console.export_text()
    assert "! vitcop 1_3: vitcop reached layer-averaged ratio 0.500" in " ".join(text.split())


def test_plot_is_readable(fastv_profile):
    pytest.importorskip("matplotlib")
    from matplotlib.text import Annotation

    from vitcop_cli.profile.plot import figure
    from vitcop_cli.profile import ProfileResult

    result = ProfileResult.from_dict(fastv_profile.to_dict())
    result.model = "/models/" + "a-very-long-checkpoint-name-" * 4
    result.rows[1].ratio_warning = "missed"  # at least one ringed point
    fig = figure(result)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    title = fig._suptitle.get_window_extent(renderer)
    assert box.x0 <= title.x0 and title.x1 <= box.x1 and title.y1 <= box.y1, "title clipped"
    ax = fig.axes[0]
    assert not [t for t in ax.get_children() if isinstance(t, Annotation)], "no labels next to points"
    lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 1]
    by_marker = {ln.get_marker() for ln in lines}
    assert len(by_marker) == len(result.methods), "one marker shape per method"
    xs = {tuple(round(x, 6) for x in ln.get_xdata()) for ln in lines}
    assert len(xs) == len(lines), "methods are offset in x so coinciding lines stay visible"
    rings = [ln for ln in ax.get_lines() if ln.get_linestyle() in ("None", "none", "") and ln.get_markersize() >= 12]
    assert rings, "a point that missed its ratio is ringed"


@pytest.mark.parametrize("achieved, target, ringed", [
    (0.355, 1 / 3, True),   # 6.5% off: the warning's rule flags it, though under 0.03 absolute
    (0.118, 1 / 9, True),   # 6.2% off at a small ratio
    (0.114, 1 / 9, False),  # 2.6% off: within the 5% tolerance
])
def test_the_plot_rings_points_by_the_ratio_warning_rule(achieved, target, ringed):
    from types import SimpleNamespace

    from vitcop_cli.profile.plot import missed

    row = SimpleNamespace(method="vitcop", ratio_warning=None, layer_averaged_ratio=achieved, target_ratio=target)
    assert missed(row) is ringed


# --------------------------------------------------------------------------------------------
# README's tables for the batch results lines, the batch summary and profile --json (issue 10)
# --------------------------------------------------------------------------------------------


def _table(name: str) -> list[str]:
    """Field names of README's ``<!-- NAME:start -->`` ... ``<!-- NAME:end -->`` table, in order."""
    assert README.count(f"<!-- {name}:start -->") == 1 and README.count(f"<!-- {name}:end -->") == 1, name
    block = README.split(f"<!-- {name}:start -->")[1].split(f"<!-- {name}:end -->")[0]
    fields = [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", block, flags=re.M)]
    assert fields and len(fields) == len(set(fields)), f"{name}: empty, or a field listed twice"
    return fields


def _paths(obj, prefix: str = ""):
    """Dotted paths of every key of a ``to_dict()`` (lists of objects: their items' keys; ``versions`` is free-form)."""
    for key, value in obj.items():
        yield prefix + key
        items = value if isinstance(value, list) else [value]
        for v in items:
            if isinstance(v, dict) and key != "versions":
                yield from _paths(v, prefix + key + ".")


def _dummy(cls):
    """An instance of dataclass ``cls`` with every field filled (nested dataclasses, also optional ones and
    lists of them, built too) -- so ``to_dict()`` shows every key a real one can hold, no model needed."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        args = typing.get_args(t)
        nested = [a for a in (args or (t,)) if dataclasses.is_dataclass(a)]
        origin = typing.get_origin(t)
        if nested:
            values[f.name] = [_dummy(nested[0])] if origin is list else _dummy(nested[0])
        elif origin is list:
            values[f.name] = []
        elif origin is dict:
            values[f.name] = {}
        elif t in (int, float, bool, str):
            values[f.name] = t()
        else:
            values[f.name] = None
    return cls(**values)


def _differ(real: set, documented: set):
    return {"not in README": sorted(real - documented), "not in the output": sorted(documented - real)}


def test_readme_documents_exactly_the_profile_json_fields():
    """Add or rename a field of ProfileResult / ProfileRow / Spread and this fails until README's table says so."""
    from vitcop_cli.profile.run import SCHEMA, ProfileResult

    d = _dummy(ProfileResult).to_dict()
    assert d["schema"] == SCHEMA == "vitcop.profile/2" and list(d)[0] == "schema"
    assert d["rows"] and isinstance(d["rows"][0]["prefill_s"], dict)  # the nested objects were built
    real, documented = set(_paths(d)), set(_table("profile-json-fields"))
    assert real == documented, _differ(real, documented)


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    """A real ``run_batch`` on a scripted session (no model): multiple-choice, open and failing items."""
    from test_batch import FRAMES, FakeSession, _mc_file, lines_of
    from vitcop_cli.batch import items_from_jsonl, run_batch

    tmp = tmp_path_factory.mktemp("batch_fields")
    out = tmp / "out.jsonl"
    summary = run_batch(FakeSession({"Circle color?": "(A)"}), items_from_jsonl(_mc_file(tmp)), out,
                        presets=["none", "1_9"], frames=FRAMES, prefetch=False)
    return lines_of(out), summary


def test_readme_documents_exactly_the_batch_line_fields(batch_run):
    """A results line is ask's fields (README's ask table) plus the batch table's; a field added to or
    dropped from the line without README changing fails here, and so does a README row with no field."""
    lines, _ = batch_run
    batch_doc, ask_doc = _table("batch-json-fields"), set(_table("ask-json-fields"))
    documented = set(batch_doc) | ask_doc
    ok = [r for r in lines if r["error"] is None]
    failed = [r for r in lines if r["error"] is not None]
    assert ok and failed, "the run has both kinds of line"
    for rec in ok:
        assert list(rec)[0] == "id" and rec["schema"] == "vitcop.batch/2"
        real = set(_paths(rec))
        assert real == documented, _differ(real, documented)
    keys = {"id", "schema", "video", "question", "prompt", "options", "expected", "model", "preset", "method", "error"}
    for rec in failed:  # the same keys; null but for the key and item fields (as README says)
        assert set(rec) == set(ok[0]), _differ(set(rec), set(ok[0]))
        assert all(v is None for k, v in rec.items() if k not in keys), rec
    assert {p for p in batch_doc if "." in p} == set(), "the batch table lists top-level fields only"


def test_readme_documents_exactly_the_batch_summary_fields(batch_run):
    """``batch --json`` prints BatchSummary.to_dict(); README lists its fields, ``groups.*`` standing for
    the group objects in ``groups`` and ``overall`` alike."""
    _, summary = batch_run
    d = summary.to_dict()
    assert next(iter(d)) == "schema" and d["schema"] == "vitcop.batch-summary/1"
    assert d["groups"] and isinstance(d["overall"], dict)
    real = {"groups." + p[len("overall."):] if p.startswith("overall.") else p for p in _paths(d)}
    assert set(_paths(d["overall"])) == set(_paths(d["groups"][0]))
    documented = set(_table("batch-summary-json-fields"))
    assert real == documented, _differ(real, documented)


def test_the_field_table_guards_bite(monkeypatch, batch_run):
    """Each guard above fails on a field in the output but not in README, and on a README row with no field."""
    import copy
    import dataclasses
    from types import SimpleNamespace

    import test_cli_consistency as me
    from vitcop_cli.profile import run as prof

    # profile: README loses a row / gains one; the code gains a field (in a row, annotated as usual)
    for readme in (README.replace("| `rows.ttft_speedup` |", "| ttft_speedup |"),
                   README.replace("<!-- profile-json-fields:end -->", "| `rows.x_s` | s | x |\n<!-- profile-json-fields:end -->")):
        with monkeypatch.context() as m:
            m.setattr(me, "README", readme)
            with pytest.raises(AssertionError):
                me.test_readme_documents_exactly_the_profile_json_fields()
    row = dataclasses.make_dataclass("ProfileRow", [("x_s", "float | None", dataclasses.field(default=None))],
                                     bases=(prof.ProfileRow,))
    row.__module__ = prof.__name__
    with monkeypatch.context() as m:
        m.setattr(prof, "ProfileRow", row)  # ProfileResult.rows is list["ProfileRow"], resolved in that module
        with pytest.raises(AssertionError):
            me.test_readme_documents_exactly_the_profile_json_fields()
    # batch lines: a key added to every line; a key dropped from the successful ones
    lines, summary = batch_run
    for change in (lambda r: r.update(extra=1), lambda r: r.pop("prompt") if r["error"] is None else None):
        changed = copy.deepcopy(lines)
        for r in changed:
            change(r)
        with pytest.raises(AssertionError):
            me.test_readme_documents_exactly_the_batch_line_fields((changed, summary))
    # batch summary: a key the table lacks, at the top or in the groups
    for change in (lambda d: d.update(extra_top=1), lambda d: d["overall"].update(extra=1)):
        d = summary.to_dict()
        change(d)
        with pytest.raises(AssertionError):
            me.test_readme_documents_exactly_the_batch_summary_fields((None, SimpleNamespace(to_dict=lambda d=d: d)))
