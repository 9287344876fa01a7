"""``vitcop profile`` on the tiny models: the interleaved schedule, the JSON / CSV / PNG outputs, bad input.

The expensive part (every method x every preset on the tiny Qwen2-VL, 2 repeats after 1 warm-up,
4 frames, 3 new tokens) runs once per module through the CLI; the schema, CSV and plot tests read
its outputs. What is checked is plumbing and invariants, never that pruning is faster: the tiny
random models are far too small for timings to mean anything.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from vitcop_cli import api
from vitcop_cli import profile as prof
from tests.test_cli import assert_one_line_failure  # the CLI's one-line error contract
from vitcop_cli.app import app
from vitcop_cli.profile.view import render_profile
from vitcop_cli.errors import InputError
from vitcop_cli.profile import BASELINE, ProfileResult, RunSlot, entries, run_order, run_profile, to_csv

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CLIP = SAMPLES / "shapes.mp4"
FRAMES, REPEAT, MAX_NEW = 4, 2, 3
METHODS = ["vitcop", "fastv", "divprune", "uniform"]
PRESETS = ["none", "1_3", "2_9", "1_9"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

runner = CliRunner()

try:
    import matplotlib

    HAVE_MPL = True
    del matplotlib  # only probing: keeps pyflakes (which ignores noqa) quiet
except ImportError:
    HAVE_MPL = False


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"NO_COLOR": "1", "COLUMNS": "80"})


def profile_args(model, *extra):
    return ["profile", CLIP, "--model", model, "--offline", "--frames", FRAMES, "--repeat", REPEAT,
            "--max-new-tokens", MAX_NEW, *extra]


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("api.load must not be called")

    monkeypatch.setattr(api, "load", refuse)


# --------------------------------------------------------------------------------------------
# run_order: the interleaved schedule (pure)
# --------------------------------------------------------------------------------------------


def rounds_of(schedule: list[RunSlot]) -> list[list[tuple[str, str]]]:
    out: dict[int, list] = {}
    for slot in schedule:
        out.setdefault(slot.round, []).append((slot.method, slot.preset))
    return [out[r] for r in sorted(out)]


@pytest.mark.parametrize("methods, presets, repeat, warmup", [
    (METHODS, PRESETS, 3, 1),
    (["vitcop"], PRESETS, 5, 0),
    (["fastv", "vitcop"], ["1_9", "1_3"], 4, 2),  # `none` left out: still measured, it is the baseline
    (["uniform"], ["none"], 3, 1),  # the baseline alone
])
def test_run_order(methods, presets, repeat, warmup):
    schedule = run_order(methods, presets, repeat, warmup)
    fixed = entries(methods, presets)
    assert fixed[0] == (BASELINE, BASELINE)
    expected = {(BASELINE, BASELINE)} | {(m, p) for m in methods for p in presets if p != BASELINE}
    assert set(fixed) == expected and len(fixed) == len(expected)

    measured = [(s.method, s.preset) for s in schedule if not s.warmup]
    warm = [(s.method, s.preset) for s in schedule if s.warmup]
    for key in expected:  # every (method, preset) measured exactly `repeat` times, warmed up `warmup` times
        assert measured.count(key) == repeat, key
        assert warm.count(key) == warmup, key
    # `none` is run once per round, never once per method
    assert sum(1 for s in schedule if s.preset == BASELINE) == repeat + warmup

    rounds = rounds_of(schedule)
    assert len(rounds) == warmup + repeat
    assert all(s.warmup == (s.round < warmup) for s in schedule)
    assert [s.round for s in schedule] == sorted(s.round for s in schedule)  # warm-up rounds come first
    for r, order in enumerate(rounds):  # each round is the fixed order rotated by one more
        k = r % len(fixed)
        assert order == fixed[k:] + fixed[:k]
    if len(fixed) > 1:
        for a, b in zip(rounds, rounds[1:]):  # no two consecutive rounds in the same order
            assert a != b
        measured_rounds = rounds[warmup:]
        # `none` is first-class: it does not always run first (or at any fixed position)
        positions = {order.index((BASELINE, BASELINE)) for order in measured_rounds}
        assert len(positions) == min(repeat, len(fixed))
        # the first-run slot (coldest caches, most drift-exposed) rotates through the entries
        assert len({order[0] for order in measured_rounds}) == min(repeat, len(fixed))


def test_run_order_drops_duplicates_and_checks_counts():
    assert entries(["vitcop", "vitcop"], ["1_3", "none", "1_3"]) == [("none", "none"), ("vitcop", "1_3")]
    with pytest.raises(ValueError):
        run_order(["vitcop"], PRESETS, 0)
    with pytest.raises(ValueError):
        run_order(["vitcop"], PRESETS, 1, warmup=-1)


# --------------------------------------------------------------------------------------------
# one real profile: every method, every preset, --json + --csv + --plot
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def profiled(tiny_models, tmp_path_factory):
    """(parsed --json, csv path, png path or None) of one full CLI profile run."""
    out = tmp_path_factory.mktemp("profile")
    csv_path, png = out / "profile.csv", out / "profile.png"
    extra = ["--methods", ",".join(METHODS), "--presets", ",".join(PRESETS), "--json", "--csv", csv_path]
    if HAVE_MPL:
        extra += ["--plot", png]
    result = invoke(*profile_args(tiny_models["qwen2_vl"], *extra))
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout), csv_path, png if HAVE_MPL else None  # all of stdout is one JSON object


SPREAD = {"median": float, "min": float, "max": float, "values": [float]}
ROW_SCHEMA = {
    "method": str, "preset": str, "runs": int,
    "n_visual": int, "after_stage1": int, "after_stage2": int, "after_stage3": int,
    "shallow_layer": (int, None), "deep_layer": (int, None),
    "layer_averaged_visual": float, "layer_averaged_ratio": float, "target_ratio": float,
    "prefill_flops": float, "prefill_flops_unpruned": float, "flops_ratio": float,
    "vision_encoder_s": SPREAD, "prefill_s": SPREAD, "ttft_s": SPREAD, "model_ttft_s": SPREAD,
    "decode_tokens_per_s": (float, None), "pruning_s": float, "peak_memory_bytes": (int, None),
    "phases": {k: float for k in ("video_decode_s", "preprocess_s", "generate_setup_s", "vision_encoder_s",
                                  "pre_llm_s", "llm_layers_s", "pruning_s", "first_token_s", "total_s",
                                  "question_setup_s")},
    "prefill_speedup": (float, None), "ttft_speedup": (float, None), "model_ttft_speedup": (float, None),
    "flops_speedup": float,
    "memory_ratio": (float, None),
    "answer": str, "generated_tokens": int, "matches_none": bool, "answers_consistent": bool,
    "ratio_warning": (str, None),
    "answers_correct": (int, None), "answers_total": (int, None), "accuracy": (float, None),  # --answers
}
SCHEMA = {
    "model": str, "model_type": str, "device": str, "dtype": str, "attn_implementation": str,
    "video": str, "kind": str, "frames": int, "processed_grid": ([int], None), "question": str,
    "prompt_tokens": int, "n_visual": int, "presets": [str], "methods": [str],
    "repeat": int, "warmup": int, "max_new_tokens": int,
    "memory_measure": str, "memory_note": str, "process_peak_rss_bytes": (int, None),
    "model_load_s": (float, None), "video_decode_s": (float, None), "preprocess_s": float, "profile_s": float,
    "rows": [ROW_SCHEMA], "warnings": [str], "versions": {"vitcop": str, "torch": str, "transformers": str},
    "schema": str, "temperature": float, "top_p": (float, None), "seed": (int, None),
    "answers_file": (str, None), "answers_questions": (int, None),  # --answers
}


def check_schema(value, schema, where="$"):
    """``value`` has exactly ``schema``'s keys and types (a tuple = any of; None = JSON null; [t] = list of t)."""
    if isinstance(schema, dict):
        assert isinstance(value, dict), where
        assert set(value) == set(schema), (where, set(value) ^ set(schema))
        for k, sub in schema.items():
            check_schema(value[k], sub, f"{where}.{k}")
    elif isinstance(schema, list):
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            check_schema(item, schema[0], f"{where}[{i}]")
    elif isinstance(schema, tuple):
        errors = []
        for option in schema:
            try:
                check_schema(value, option, where)
                return
            except AssertionError as exc:
                errors.append(exc)
        raise AssertionError((where, value, schema))
    elif schema is None:
        assert value is None, where
    elif schema is float:
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), (where, value)
    else:
        assert isinstance(value, schema) and not (schema is int and isinstance(value, bool)), (where, value)


def test_profile_json_schema(profiled, tiny_models):
    d, _, _ = profiled
    check_schema(d, SCHEMA)
    assert d["model"] == str(tiny_models["qwen2_vl"]) and d["model_type"] == "qwen2_vl"
    assert (d["device"], d["dtype"], d["frames"], d["video"]) == ("cpu", "float32", FRAMES, str(CLIP))
    assert (d["repeat"], d["warmup"], d["max_new_tokens"]) == (REPEAT, 1, MAX_NEW)
    assert d["methods"] == METHODS and d["presets"] == PRESETS

    rows = d["rows"]
    keys = [(r["method"], r["preset"]) for r in rows]
    assert keys == entries(METHODS, PRESETS)  # the baseline first, once, then every (method, preset)
    assert len(keys) == len(set(keys)) == 1 + len(METHODS) * (len(PRESETS) - 1)
    assert {r["method"] for r in rows} == {BASELINE, *METHODS}  # rows carry their method

    base = rows[0]
    assert (base["method"], base["preset"]) == (BASELINE, BASELINE)
    assert base["prefill_speedup"] == base["ttft_speedup"] == base["flops_speedup"] == 1.0
    assert base["matches_none"] is True
    assert base["flops_ratio"] == 1.0 and base["layer_averaged_ratio"] == 1.0 and base["target_ratio"] == 1.0
    assert base["n_visual"] == base["after_stage1"] == base["after_stage2"] == base["after_stage3"]
    assert base["prefill_flops"] == base["prefill_flops_unpruned"]
    assert d["n_visual"] == base["n_visual"] > 0

    for r in rows:
        where = (r["method"], r["preset"])
        assert r["n_visual"] == d["n_visual"], where  # N equal across rows
        assert r["n_visual"] >= r["after_stage1"] >= r["after_stage2"] >= r["after_stage3"] >= 1, where
        assert r["runs"] == REPEAT, where
        for key in ("vision_encoder_s", "prefill_s", "ttft_s"):
            s = r[key]
            assert len(s["values"]) == REPEAT and s["min"] <= s["median"] <= s["max"], (where, key)
            assert s["min"] == min(s["values"]) and s["max"] == max(s["values"]), (where, key)
        assert r["ttft_s"]["median"] >= r["prefill_s"]["median"] > 0, where
        assert r["prefill_speedup"] == pytest.approx(base["prefill_s"]["median"] / r["prefill_s"]["median"])
        assert r["ttft_speedup"] == pytest.approx(base["ttft_s"]["median"] / r["ttft_s"]["median"])
        assert r["flops_speedup"] == pytest.approx(1 / r["flops_ratio"])
        assert r["prefill_flops"] == pytest.approx(r["flops_ratio"] * r["prefill_flops_unpruned"])
        assert r["prefill_flops_unpruned"] == base["prefill_flops_unpruned"], where
        assert r["layer_averaged_visual"] == pytest.approx(r["layer_averaged_ratio"] * r["n_visual"])
        assert 1 <= r["generated_tokens"] <= MAX_NEW, where
        assert r["answers_consistent"], where  # greedy on CPU: every run gives the same tokens
        if r["method"] != BASELINE:
            assert r["layer_averaged_ratio"] < 1 and r["flops_ratio"] < 1 and r["flops_speedup"] > 1, where
            assert r["target_ratio"] < 1, where
    # CPU: no per-run peak memory; the lifetime peak RSS once, with a note saying so
    assert d["memory_measure"] == prof.MEMORY_CPU and "lifetime high-water mark" in d["memory_note"]
    assert all(r["peak_memory_bytes"] is None and r["memory_ratio"] is None for r in rows)
    assert d["process_peak_rss_bytes"] > 0

    # the JSON is exactly the dataclass the table renders
    assert ProfileResult.from_dict(d).to_dict() == d


def test_profile_matches_none_is_the_token_comparison(profiled, sessions):
    """matches_none compares greedy token ids; the library on the same inputs agrees with the CLI."""
    d, _, _ = profiled
    from vitcop_cli.media.video import load_visual

    session = sessions["qwen2_vl"]
    prepared = session.prepare(load_visual(CLIP, frames=FRAMES), d["question"])
    none = session.generate(prepared, preset="none", max_new_tokens=MAX_NEW)
    assert d["rows"][0]["answer"] == none.answer
    for r in d["rows"][1:3]:
        got = session.generate(prepared, preset=r["preset"], method=r["method"], max_new_tokens=MAX_NEW)
        assert r["answer"] == got.answer
        assert r["matches_none"] == (got.generated_ids == none.generated_ids)
        assert r["after_stage3"] == got.pruning.after_stage3


def test_profile_csv(profiled):
    d, csv_path, _ = profiled
    text = csv_path.read_text(encoding="utf-8")
    lines = list(csv.DictReader(text.splitlines()))
    header = text.splitlines()[0].split(",")
    assert header[:2] == ["method", "preset"]
    for col in ("n_visual", "after_stage1", "after_stage2", "after_stage3", "layer_averaged_ratio",
                "prefill_s_median", "prefill_s_min", "prefill_s_max", "ttft_s_median", "decode_tokens_per_s",
                "peak_memory_bytes", "prefill_flops", "prefill_speedup", "flops_speedup", "memory_ratio",
                "matches_none"):
        assert col in header, col
    assert not any(c.endswith("_values") for c in header)
    assert len(lines) == len(d["rows"])  # one line per (method, preset)
    buffer = io.StringIO(newline="")
    to_csv(ProfileResult.from_dict(d), buffer)  # the library call, to an open file, writes the same
    assert buffer.getvalue() == csv_path.read_bytes().decode("utf-8")
    for line, row in zip(lines, d["rows"]):
        assert (line["method"], line["preset"]) == (row["method"], row["preset"])
        assert int(line["n_visual"]) == row["n_visual"]
        assert float(line["prefill_s_median"]) == pytest.approx(row["prefill_s"]["median"])
        assert float(line["prefill_speedup"]) == pytest.approx(row["prefill_speedup"])
        assert line["matches_none"] == str(row["matches_none"])
        assert line["memory_ratio"] == ""  # None on CPU -> empty cell


def test_profile_plot_png(profiled, tmp_path):
    if not HAVE_MPL:
        pytest.skip("matplotlib is not installed (pip install 'vitcop[plot]')")
    d, _, png = profiled
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # the same figure on CUDA-like data (memory panel drawn) and from a saved JSON
    from vitcop_cli.profile.plot import plot_profile

    result = ProfileResult.from_dict(d)
    for r in result.rows:
        r.peak_memory_bytes, r.memory_ratio = 2**30, 1.0 if r.method == BASELINE else 0.9
    result.memory_measure = prof.MEMORY_CUDA
    out = plot_profile(result, tmp_path / "cuda.svg")
    assert out.read_text().lstrip().startswith("<?xml") and "vitcop" in out.read_text()


def test_profile_table_fits_80_columns(profiled):
    """Every row is in the table; nothing is cut off at 80 columns; CPU memory is shown as n/a, with why."""
    d, _, _ = profiled
    console = Console(width=80, record=True, color_system=None)
    render_profile(ProfileResult.from_dict(d), console)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text
    table = text.split("N: visual tokens")[0]  # the notes below may name methods too
    for method in METHODS:
        assert table.count(f" {method} ") == len(PRESETS) - 1, method
    for preset in PRESETS[1:]:
        assert re.search(rf"^{preset}\b", text, re.M), preset
    assert "lifetime high-water mark" in text and "n/a on CPU" in text
    base = d["rows"][0]
    assert f"{base['n_visual']}→{base['n_visual']}→{base['n_visual']}" in text


# --------------------------------------------------------------------------------------------
# the library call and the table path of the command (small: one method, one preset)
# --------------------------------------------------------------------------------------------


def test_run_profile_library(sessions):
    session = sessions["llava_onevision"]
    from vitcop_cli.media.video import load_visual

    prepared = session.prepare(load_visual(CLIP, frames=FRAMES), "What moves?")
    calls = []
    result = run_profile(session, prepared, ["1_9"], ["fastv"], repeat=2, warmup=1, max_new_tokens=2,
                         on_progress=lambda done, total, slot: calls.append((done, total, slot)))
    schedule = run_order(["fastv"], ["1_9"], 2, 1)
    assert [c[2] for c in calls] == [*schedule, None]
    assert [c[0] for c in calls] == list(range(len(schedule) + 1))
    assert {c[1] for c in calls} == {len(schedule)}
    assert [(r.method, r.preset) for r in result.rows] == [("none", "none"), ("fastv", "1_9")]
    assert result.presets == ["1_9"] and result.methods == ["fastv"]
    assert result.baseline.prefill_speedup == 1.0 and result.baseline.matches_none
    assert result.row("fastv", "1_9").after_stage2 < result.n_visual
    with pytest.raises(InputError, match="unknown pruning method"):
        run_profile(session, prepared, ["1_3"], ["bogus"], repeat=1, warmup=0, max_new_tokens=1)
    with pytest.raises(InputError, match="unknown preset"):
        run_profile(session, prepared, ["bogus"], ["vitcop"], repeat=1, warmup=0, max_new_tokens=1)


def test_profile_table_on_stdout(tiny_models):
    result = invoke(*profile_args(tiny_models["llava_onevision"], "--presets", "1_9", "--repeat", 1, "--warmup", 0))
    assert result.exit_code == 0, (result.output, result.exception)
    out = ANSI.sub("", result.stdout)
    assert out.startswith("vitcop profile")
    assert re.search(r"^none\b", out, re.M) and re.search(r"^1_9\b", out, re.M) and " vitcop " in out
    assert "Traceback" not in result.stderr and "{" not in out


# --------------------------------------------------------------------------------------------
# bad input: exit 2, one line, before any model is loaded
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, needles", [
    (["--presets", "none,1_7"], ["unknown preset '1_7'"]),
    (["--methods", "vitcop,bogus"], ["unknown pruning method 'bogus'", "fastv", "divprune", "uniform"]),
    (["--methods", " , "], ["--methods is empty"]),
    (["--presets", ""], ["--presets is empty"]),
    (["--repeat", "0"], ["--repeat must be at least 1"]),
    (["--warmup", "-1"], ["--warmup"]),
    (["--max-new-tokens", "0"], ["--max-new-tokens"]),
    (["--fps", "1"], ["--fps", "--frames", "mutually exclusive"]),
    (["--csv", "/nonexistent/dir/p.csv"], ["--csv", "does not exist"]),
], ids=["preset", "method", "no-methods", "no-presets", "repeat-0", "warmup", "max-new-tokens", "fps-frames",
        "csv-folder"])
def test_profile_bad_input(no_model_loading, extra, needles):
    result = invoke(*profile_args("/nonexistent/model", *extra))
    assert_one_line_failure(result, 2, *needles)


def test_profile_missing_file(no_model_loading, tmp_path):
    result = invoke("profile", tmp_path / "missing.mp4", "--model", "/nonexistent/model")
    assert_one_line_failure(result, 2, "file not found")


def test_profile_plot_bad_extension(no_model_loading, tmp_path):
    if not HAVE_MPL:
        pytest.skip("matplotlib is not installed")
    result = invoke(*profile_args("/nonexistent/model", "--plot", tmp_path / "p.txt"))
    assert_one_line_failure(result, 2, "--plot", "unsupported image format", ".png")


def test_profile_plot_without_matplotlib(no_model_loading, monkeypatch, tmp_path):
    """--plot without matplotlib: one clear line and exit 2, before any model is loaded."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    result = invoke(*profile_args("/nonexistent/model", "--plot", tmp_path / "p.png"))
    assert_one_line_failure(result, 2, "--plot needs matplotlib", "pip install 'vitcop[plot]'")
    assert not (tmp_path / "p.png").exists()
    from vitcop_cli.profile import plot

    with pytest.raises(InputError, match="needs matplotlib"):
        plot.require_matplotlib()
