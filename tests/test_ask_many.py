"""``vitcop ask CLIP Q1 Q2 ...`` (issue 26): one decode and one pruned prefix for every question.

In-process (typer's CliRunner) on the built-in demo model ``tiny:qwen2_vl``, offline, its cache seeded with the
session's tiny Qwen2-VL (the same build): the answers equal separate ``Session.ask`` runs token for token, in
question order; the first answer builds the prefix, the others reuse it; ``--json`` gives one line per question
(one question: the indented object as before); a failure on question k leaves the answers before it printed;
every question and option is checked before anything is decoded.
"""

from __future__ import annotations

import json
import shutil

import pytest
from test_api import CLIP
from test_cli import ANSI, assert_one_line_failure
from typer.testing import CliRunner

from vitcop_cli import api
from vitcop_cli.app import app
from vitcop_cli.errors import RuntimeFailure
from vitcop_cli.models import demo_models
from vitcop_cli.session.pruned_clip import PrunedClip
from vitcop_cli.session.session import Session

DEMO = "tiny:qwen2_vl"
# different lengths, so each answer's prompt token count tells which question it answered
QUESTIONS = ["What happens?", "Which shape moves fastest across the frame?", "Colors?"]
MAX_NEW = 3
BASE = ["--model", DEMO, "--offline", "--frames", "4", "--max-new-tokens", str(MAX_NEW)]


@pytest.fixture(scope="module")
def demo_cache(tiny_models, tmp_path_factory):
    """A vitcop cache (``VITCOP_CACHE``) holding ``tiny:qwen2_vl``: a copy of the session's tiny Qwen2-VL."""
    root = tmp_path_factory.mktemp("demo-cache")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("VITCOP_CACHE", str(root))
        folder = demo_models.parse(DEMO).folder
    folder.parent.mkdir(parents=True)
    shutil.copytree(tiny_models["qwen2_vl"], folder)
    return root


def run(demo_cache, *args, input=None):
    env = {"NO_COLOR": "1", "COLUMNS": "100", "VITCOP_CACHE": str(demo_cache)}
    return CliRunner().invoke(app, [str(a) for a in args], input=input, env=env)


@pytest.fixture(scope="module")
def reference(sessions):
    """Each question asked alone (``Session.ask``, the same options) on the same checkpoint."""
    return {q: sessions["qwen2_vl"].ask(CLIP, q, preset="1_3", frames=4, max_new_tokens=MAX_NEW) for q in QUESTIONS}


@pytest.fixture
def no_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("api.load must not be called")

    monkeypatch.setattr(api, "load", refuse)


def test_three_questions_one_json_line_each_in_order_reusing_the_prefix(demo_cache, reference):
    result = run(demo_cache, "ask", CLIP, *QUESTIONS, *BASE, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    answers = [json.loads(line) for line in lines]
    assert [d["question"] for d in answers] == QUESTIONS
    assert [d["prefix"]["reused"] for d in answers] == [False, True, True]
    assert [d["prefix"]["source"] for d in answers] == ["built", "memory", "memory"]
    assert answers[0]["prefix"]["saved_s"] == 0 and all(d["prefix"]["saved_s"] > 0 for d in answers[1:])
    for d, q in zip(answers, QUESTIONS):
        alone = reference[q]
        assert d["model"] == DEMO and d["preset"] == "1_3"
        assert d["generated_ids"] == alone.generated_ids and d["answer"] == alone.answer
        assert d["tokens"] == alone.to_dict()["tokens"]
        assert d["pruning"]["kv_cache_lengths"] == alone.pruning.kv_cache_lengths
    assert len({d["tokens"]["prompt"] for d in answers}) == 3, "precondition: the prompts tell the questions apart"
    # the process start-up is the first answer's wait, not every answer's
    assert answers[0]["timings"]["startup_s"] is not None
    assert [d["timings"]["startup_s"] for d in answers[1:]] == [None, None]
    # the demo-model warning is in every object but on stderr once
    assert all(d["warnings"] for d in answers)
    assert result.stderr.count("warning: tiny:qwen2_vl is a built-in demo model") == 1


def test_one_question_from_stdin_keeps_the_indented_object(demo_cache, reference):
    """One question prints the one (indented) JSON object ``ask --json`` always printed."""
    result = run(demo_cache, "ask", CLIP, "-", *BASE, "--json", input=QUESTIONS[0] + "\n")
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.startswith("{\n  ") and result.stdout.endswith("}\n")
    d = json.loads(result.stdout)
    assert d["question"] == QUESTIONS[0] and d["generated_ids"] == reference[QUESTIONS[0]].generated_ids
    assert d["prefix"]["reused"] is False


def test_several_questions_are_labelled_with_a_prefix_line_each(demo_cache, reference):
    result = run(demo_cache, "ask", CLIP, *QUESTIONS[:2], *BASE, "--no-stream")
    assert result.exit_code == 0, (result.output, result.exception)
    a, b = (reference[q].answer for q in QUESTIONS[:2])
    assert result.stdout == f"Q1: {QUESTIONS[0]}\n{a}\n\nQ2: {QUESTIONS[1]}\n{b}\n"
    err = " ".join(ANSI.sub("", result.stderr).split())
    assert err.count("time to first token") == 2  # the whole report, per answer
    assert "answer 1/2 · prefix: built for this answer · system + visual" in err
    assert "answer 2/2 · prefix: reused from memory, saved " in err


def test_a_failure_on_question_k_keeps_the_answers_before_it(demo_cache, monkeypatch):
    real = PrunedClip.ask
    calls = []

    def second_fails(self, question, **options):
        calls.append(question)
        if len(calls) == 2:
            raise RuntimeFailure("out of GPU memory during generation (test)")
        return real(self, question, **options)

    monkeypatch.setattr(PrunedClip, "ask", second_fails)
    result = run(demo_cache, "ask", CLIP, *QUESTIONS, *BASE, "--json")
    assert result.exit_code == 1, (result.output, result.exception)
    assert calls == QUESTIONS[:2], "stopped at the failing question"
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["question"] == QUESTIONS[0]
    errors = [line for line in ANSI.sub("", result.stderr).splitlines() if line.startswith("error:")]
    assert errors == ["error: out of GPU memory during generation (test)"]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("questions, needle", [
    (["What?", "  "], "question is empty"),
    (["-", "-"], "QUESTION - (stdin) can be given once"),
    (["What?", "x" * 1_000_001], "the limit is 1,000,000"),
])
def test_every_question_is_checked_before_the_model_loads(no_load, questions, needle):
    result = CliRunner().invoke(app, ["ask", str(CLIP), *questions, "--model", "m"], input="q\n", env={"NO_COLOR": "1"})
    assert_one_line_failure(result, 2, needle)


def test_the_length_limit_is_checked_before_the_clip_is_decoded(demo_cache, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Session.open must not be called")

    monkeypatch.setattr(Session, "open", refuse)
    result = run(demo_cache, "ask", CLIP, *QUESTIONS[:2], "--model", DEMO, "--offline", "--max-new-tokens", 10**6)
    assert_one_line_failure(result, 2, "--max-new-tokens 1,000,000 does not fit the model's")


def test_prefix_cache_keeps_the_prefix_for_the_next_process(demo_cache, reference, tmp_path):
    """``--prefix-cache DIR``: the first run saves the clip's prefix, the next run (another question) reads it
    from disk — no decode, the same answer as asked alone; a cap that is not positive, or a file given as DIR,
    is refused before the model loads."""
    store = tmp_path / "prefixes"
    first = run(demo_cache, "ask", CLIP, QUESTIONS[0], *BASE, "--json", "--prefix-cache", store)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["prefix"]["source"] == "built" and len(list(store.iterdir())) == 1
    second = run(demo_cache, "ask", CLIP, QUESTIONS[1], *BASE, "--json", "--prefix-cache", store)
    got = json.loads(second.stdout)
    assert got["prefix"]["source"] == "disk" and got["prefix"]["reused"] and got["prefix"]["saved_s"] > 0
    assert got["generated_ids"] == reference[QUESTIONS[1]].generated_ids
    for bad in (["--prefix-cache-gb", "0"], ["--prefix-cache-gb", "nan"]):
        refused = run(demo_cache, "ask", CLIP, QUESTIONS[0], *BASE, "--prefix-cache", store, *bad)
        assert refused.exit_code == 2 and "--prefix-cache-gb" in refused.stderr
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    refused = run(demo_cache, "ask", CLIP, QUESTIONS[0], *BASE, "--prefix-cache", not_a_folder)
    assert refused.exit_code == 2 and "not a folder" in refused.stderr
