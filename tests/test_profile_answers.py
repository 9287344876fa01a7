"""``vitcop profile --answers FILE``: reading the labelled questions, scoring each row, the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import test_profile
from tests.test_cli import assert_one_line_failure
from tests.test_profile import invoke
from vitcop_cli.questions.inputs import mc_prompt
from vitcop_cli.errors import InputError
from vitcop_cli.profile.answers import add_accuracy, prepare_answers, read_answers

no_model_loading = test_profile.no_model_loading  # fixture: api.load must not be called

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CLIP = SAMPLES / "shapes.mp4"
OPTIONS = ["Red", "Blue", "Green", "Yellow"]


def write_lines(path: Path, *lines: dict) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def answers_file(tmp_path):
    (tmp_path / "clips").mkdir()
    clip = tmp_path / "clips" / "shapes.mp4"
    clip.write_bytes(CLIP.read_bytes())
    return clip, write_lines(
        tmp_path / "qa.jsonl",
        {"id": "q1", "video": "clips/shapes.mp4", "question": "Circle colour?", "options": OPTIONS, "answer": "A"},
        {"id": "q2", "video": "clips/shapes.mp4", "question": "Square colour?", "options": OPTIONS, "answer": "Blue"},
        {"id": "q3", "video": "clips/shapes.mp4", "question": "What happens?"},                    # unlabelled
        {"id": "q4", "video": "clips/shapes.mp4", "question": "How many shapes?", "answer": "Two"},  # open
        {"id": "x1", "video": "other.mp4", "question": "Colour?", "options": OPTIONS, "answer": "B"},
    )


# ---- reading ------------------------------------------------------------------------------
def test_read_keeps_the_labelled_questions_about_the_clip(answers_file):
    clip, path = answers_file
    items, notes = read_answers(path, clip)
    assert [i.id for i in items] == ["q1", "q2", "q4"]
    assert [i.expected for i in items] == ["A", "B", "Two"]     # option text -> its letter
    assert any("skipped: q3" in n for n in notes) and any("1 line about other clips" in n for n in notes)


def test_read_the_sample_questions_file():
    items, _ = read_answers(SAMPLES / "questions.jsonl", CLIP)
    assert [i.id for i in items] == ["shapes-1", "shapes-2", "shapes-3"]


def test_read_fails_without_a_labelled_question_about_the_clip(tmp_path, answers_file):
    clip, path = answers_file
    with pytest.raises(InputError, match="no labelled question about .*5 lines about other clips"):
        read_answers(path, tmp_path / "elsewhere.mp4")
    only_open = write_lines(tmp_path / "open.jsonl", {"video": "clips/shapes.mp4", "question": "What happens?"})
    with pytest.raises(InputError, match="1 question about it but none with an \"answer\""):
        read_answers(only_open, clip)
    bad = write_lines(tmp_path / "bad.jsonl", {"video": "clips/shapes.mp4", "question": "Q?", "options": OPTIONS,
                                                "answer": "Z"})
    with pytest.raises(InputError, match="line 1"):            # batch's validation, reused
        read_answers(bad, clip)


# ---- scoring --------------------------------------------------------------------------------
class FakeSession:
    """Answers from a table keyed by (method, preset, prompt); records every generate call."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def prepare(self, visual, question, **kw):
        return SimpleNamespace(question=question, visual=visual, kw=kw)

    def generate(self, prepared, *, preset, method, max_new_tokens, temperature, top_p, seed):
        self.calls.append((method, preset, prepared.question, max_new_tokens, temperature, seed))
        return SimpleNamespace(answer=self.table[(method, preset)][prepared.question])


def test_add_accuracy_scores_every_row(answers_file):
    clip, path = answers_file
    items, _ = read_answers(path, clip)
    p1, p2, p4 = (i.prompt for i in items)
    assert p1 == mc_prompt("Circle colour?", OPTIONS) and p4 == "How many shapes?"
    table = {
        ("vitcop", "none"): {p1: "A", p2: "The answer is B.", p4: "two."},        # 3/3
        ("vitcop", "1_9"): {p1: "B", p2: "B", p4: "Three"},                       # 1/3
        ("evs", "1_9"): {p1: "(A) Red", p2: "Yellow", p4: "Two"},                 # 2/3
    }
    session = FakeSession(table)
    rows = [SimpleNamespace(method=m, preset=p) for m, p in (("none", "none"), ("vitcop", "1_9"), ("evs", "1_9"))]
    result = SimpleNamespace(rows=rows)
    labelled = prepare_answers(session, "VISUAL", items, system="sys", max_pixels=None, min_pixels=None)
    assert all(prep.kw["system"] == "sys" and prep.visual == "VISUAL" for _, prep in labelled)
    progress = []
    add_accuracy(session, result, labelled, answers_file=str(path), max_new_tokens=7, seed=3,
                 on_progress=lambda done, total: progress.append((done, total)))
    assert [(r.answers_correct, r.answers_total) for r in rows] == [(3, 3), (1, 3), (2, 3)]
    assert [r.accuracy for r in rows] == [1.0, pytest.approx(1 / 3), pytest.approx(2 / 3)]
    assert result.answers_file == str(path) and result.answers_questions == 3
    assert len(session.calls) == 9 and {c[3] for c in session.calls} == {7} and {c[5] for c in session.calls} == {3}
    assert session.calls[0][:2] == ("vitcop", "none")          # the baseline runs unpruned
    assert progress[0] == (0, 9) and progress[-1] == (9, 9)


# ---- CLI --------------------------------------------------------------------------------------
def test_cli_reports_accuracy_per_row(tiny_models, answers_file):
    clip, path = answers_file
    args = ["profile", clip, "--model", tiny_models["qwen2_vl"], "--offline", "--frames", 4, "--repeat", 1,
            "--warmup", 0, "--max-new-tokens", 2, "--methods", "vitcop,evs", "--presets", "none,1_9",
            "--answers", path]
    result = invoke(*args, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    data = json.loads(result.stdout)
    assert data["answers_file"] == str(path) and data["answers_questions"] == 3
    rows = {(r["method"], r["preset"]): r for r in data["rows"]}
    assert set(rows) == {("none", "none"), ("vitcop", "1_9"), ("evs", "1_9")}
    for r in rows.values():
        assert r["answers_total"] == 3 and 0 <= r["answers_correct"] <= 3
        assert r["accuracy"] == pytest.approx(r["answers_correct"] / 3)
    assert "skipped: q3" in result.stderr
    table = invoke(*args)
    assert table.exit_code == 0, (table.output, table.exception)
    assert "acc." in table.stdout and "labelled questions of" in table.stdout


def test_cli_without_answers_has_no_accuracy(tiny_models):
    result = invoke("profile", CLIP, "--model", tiny_models["qwen2_vl"], "--offline", "--frames", 4, "--repeat", 1,
                    "--warmup", 0, "--max-new-tokens", 2, "--presets", "none,1_9", "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    data = json.loads(result.stdout)
    assert data["answers_file"] is None and all(r["accuracy"] is None for r in data["rows"])


def test_cli_bad_answers_file_fails_before_loading(no_model_loading, tmp_path):
    missing = tmp_path / "nope.jsonl"
    assert_one_line_failure(invoke("profile", CLIP, "--answers", missing), 2, "not found")
    other = write_lines(tmp_path / "qa.jsonl", {"video": "x.mp4", "question": "Q?", "options": OPTIONS,
                                                 "answer": "A"})
    assert_one_line_failure(invoke("profile", CLIP, "--answers", other), 2, "no labelled question about")
