"""``vitcop batch`` reuses the pruned prefix of a clip across its consecutive questions, exactly.

On the tiny Qwen2-VL with weights re-drawn so that its greedy answer depends on the clip, the question and the
preset (``--frames 4``, 3 new tokens; checked below, so equal tokens are no coincidence): the answers (token ids)
of a batch with reuse equal separate ``Session.ask`` runs, line for line, in input order; reuses are counted in the summary and its notes;
a different preset or a method that reads the question never reuses; a kept prefix that does not cover the
prompt (built under another system prompt) is answered afresh; resume after an interruption stays exactly-once;
only the current clip's prefixes are held. No timing assertions.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from test_api import _redraw_weights
from test_batch import FakeSession, lines_of

from vitcop_cli.batch import (
    BatchInterrupted,
    items_from_folder,
    items_from_jsonl,
    run_batch,
)
from vitcop_cli.batch.reuse import ClipPrefixes, expected_reuse
from vitcop_cli.batch.view import render_notes

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
FRAMES, MAX_NEW = 4, 3
QUESTIONS = [("q1", "a.mp4", "What moves?"), ("q2", "a.mp4", "Which colour is the circle?"),
             ("q3", "a.mp4", "How many shapes?"), ("q4", "b.mp4", "What happens?")]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prefix_media")
    shutil.copy(SAMPLES / "shapes.mp4", root / "a.mp4")
    shutil.copy(SAMPLES / "bounce.mp4", root / "b.mp4")
    qfile = root / "questions.jsonl"
    qfile.write_text("".join(json.dumps({"id": i, "video": v, "question": q}) + "\n" for i, v, q in QUESTIONS))
    return root


@pytest.fixture(scope="module")
def session(tiny_models):
    """Its own load of the tiny Qwen2-VL (the shared ``sessions`` are not touched), weights re-drawn (seed 2)."""
    from vitcop_cli import api

    loaded = api.load(str(tiny_models["qwen2_vl"]), device="cpu", offline=True)
    _redraw_weights(loaded.model, 2)
    return loaded


class Fresh(dict):
    """{(id, preset): generated_ids} of a separate ``Session.ask`` run, asked on first use."""

    def __init__(self, session, media):
        super().__init__()
        self.session, self.media = session, media

    def __missing__(self, key):
        i, preset = key
        _, v, q = next(x for x in QUESTIONS if x[0] == i)
        self[key] = self.session.ask(self.media / v, q, preset=preset, method="vitcop", frames=FRAMES,
                                     max_new_tokens=MAX_NEW).generated_ids
        return self[key]


@pytest.fixture(scope="module")
def fresh(session, media) -> Fresh:
    return Fresh(session, media)


def test_the_redrawn_model_answers_by_clip_question_and_preset(fresh):
    """The precondition that makes token identity meaningful below."""
    on_a = [fresh[(i, "1_3")] for i in ("q1", "q2", "q3")]  # three questions on one clip: three answers
    assert len({tuple(a) for a in on_a}) == 3
    assert fresh[("q2", "1_9")] != fresh[("q2", "1_3")] and fresh[("q4", "1_3")] != fresh[("q1", "1_3")]


def _run(session, media, out, **options):
    return run_batch(session, items_from_jsonl(media / "questions.jsonl"), out, frames=FRAMES,
                     max_new_tokens=MAX_NEW, **options)


def test_questions_on_one_clip_reuse_its_prefix_with_the_answers_of_separate_asks(session, media, fresh, tmp_path,
                                                                                   monkeypatch):
    held = []  # (clips held, prefixes held) after every keep: one clip at a time
    keep = ClipPrefixes.keep

    def spy(self, video, *a):
        keep(self, video, *a)
        held.append((self.video, len(self.kept)))

    monkeypatch.setattr(ClipPrefixes, "keep", spy)
    out = tmp_path / "out.jsonl"
    summary = _run(session, media, out, presets=["1_3"])
    recs = lines_of(out)
    assert [r["id"] for r in recs] == ["q1", "q2", "q3", "q4"]  # input order
    assert [r["prefix"]["reused"] for r in recs] == [False, True, True, False]
    assert [r["prefix"]["source"] for r in recs] == ["built", "memory", "memory", "built"]
    assert [r["generated_ids"] for r in recs] == [fresh[(i, "1_3")] for i, _, _ in QUESTIONS]
    assert all(r["prefix"]["saved_s"] > 0 for r in recs[1:3]) and recs[0]["prefix"]["saved_s"] == 0
    assert recs[1]["timings"]["video_decode_s"] == 0.0 and recs[1]["tokens"]["visual"] == recs[0]["tokens"]["visual"]
    assert (summary.ok, summary.prefix_reuses, summary.overall.prefix_reuses) == (4, 2, 2)
    assert summary.groups[0].prefix_reuses == 2
    assert summary.prefix_saved_s == pytest.approx(recs[1]["prefix"]["saved_s"] + recs[2]["prefix"]["saved_s"])
    assert [n for _, n in held] == [1, 1, 1, 1] and [v for v, _ in held][-1].endswith("b.mp4")
    text = io.StringIO()
    render_notes(summary, Console(file=text, width=200))
    assert "2 answers reused the pruned prefix of an earlier question on the same clip" in text.getvalue()


def test_another_preset_or_a_question_reading_method_never_reuses(session, media, fresh, tmp_path):
    out = tmp_path / "out.jsonl"
    items = items_from_jsonl(media / "questions.jsonl")[:2]  # q1, q2 on one clip
    summary = run_batch(session, items, out, presets=["1_3", "1_9"], methods=["vitcop", "fastv"],
                        frames=FRAMES, max_new_tokens=MAX_NEW)
    recs = {(r["id"], r["preset"], r["method"]): r for r in lines_of(out)}
    assert len(recs) == 8 and summary.ok == 8
    # q1: one prefix per (preset, method), none shared between presets
    assert [recs[("q1", p, "vitcop")]["prefix"]["reused"] for p in ("1_3", "1_9")] == [False, False]
    assert [recs[("q2", p, "vitcop")]["prefix"]["reused"] for p in ("1_3", "1_9")] == [True, True]
    for p in ("1_3", "1_9"):
        assert recs[("q2", p, "vitcop")]["generated_ids"] == fresh[("q2", p)]
        assert recs[("q2", p, "vitcop")]["prefix"]["kv_tokens"] == recs[("q1", p, "vitcop")]["prefix"]["kv_tokens"]
    assert recs[("q2", "1_3", "vitcop")]["prefix"]["kv_tokens"] != recs[("q2", "1_9", "vitcop")]["prefix"]["kv_tokens"]
    for i in ("q1", "q2"):  # FastV reads the question: a single pass, nothing kept
        for p in ("1_3", "1_9"):
            assert {k: recs[(i, p, "fastv")]["prefix"][k] for k in ("kept", "reused", "source")} == {
                "kept": False, "reused": False, "source": "none"}
    assert summary.prefix_reuses == 2
    assert {(g.method, g.preset): g.prefix_reuses for g in summary.groups} == {
        ("vitcop", "1_3"): 1, ("fastv", "1_3"): 0, ("vitcop", "1_9"): 1, ("fastv", "1_9"): 0}


def test_a_prefix_that_does_not_cover_the_prompt_is_answered_afresh(session, media, fresh, tmp_path, monkeypatch):
    """A kept prefix built under another system prompt (the key would keep it apart; here it is forced in) is
    never used: the tokens-only prompt raises PrefixMiss and the job is prepared in full and answered afresh."""
    foreign = session.open(media / "a.mp4", preset="1_3", method="vitcop", frames=FRAMES, system="Be brief.").prefix
    monkeypatch.setattr(ClipPrefixes, "get", lambda self, video, preset, method: foreign)
    out = tmp_path / "out.jsonl"
    # q1 is prepared in full (handed the prefix, it builds afresh); q2 tokens only (PrefixMiss, then in full)
    summary = run_batch(session, items_from_jsonl(media / "questions.jsonl")[:2], out, presets=["1_3"],
                        frames=FRAMES, max_new_tokens=MAX_NEW)
    recs = lines_of(out)
    assert summary.ok == 2 and summary.prefix_reuses == 0
    assert [r["generated_ids"] for r in recs] == [fresh[(i, "1_3")] for i in ("q1", "q2")]
    for r in recs:
        assert (r["prefix"]["reused"], r["prefix"]["source"]) == (False, "built")
        assert "differ from the kept prefix" in r["prefix"]["reason"]


def test_resume_after_an_interruption_is_exactly_once_with_the_same_answers(session, media, fresh, tmp_path):
    out = tmp_path / "out.jsonl"

    def stop_after_two(ev):
        if ev.kind == "job" and ev.done == 2:
            raise KeyboardInterrupt

    with pytest.raises(BatchInterrupted) as info:
        _run(session, media, out, presets=["1_3"], on_progress=stop_after_two)
    assert (info.value.summary.ok, info.value.summary.prefix_reuses) == (2, 1)
    assert [r["id"] for r in lines_of(out)] == ["q1", "q2"]
    again = _run(session, media, out, presets=["1_3"])
    recs = lines_of(out)
    assert (again.ok, again.skipped, again.prefix_reuses) == (2, 2, 0)  # q3 is the first of its clip now
    assert [r["id"] for r in recs] == ["q1", "q2", "q3", "q4"]
    assert [r["generated_ids"] for r in recs] == [fresh[(i, "1_3")] for i, _, _ in QUESTIONS]
    assert [r["prefix"]["reused"] for r in recs] == [False, True, False, False]


# ---- the parts, no model ------------------------------------------------------------------------


def test_prefix_keys_tell_apart_every_option_and_only_the_current_clip_is_held():
    options = dict(system=None, fps=None, frames=4, max_frames=768, max_pixels=None, min_pixels=None, resize="fast",
                   decoder=None, decode_device="cpu")
    prefixes = ClipPrefixes("m", options)
    base = prefixes.key("/a.mp4", "1_3", "vitcop")
    assert len({base, prefixes.key("/b.mp4", "1_3", "vitcop"), prefixes.key("/a.mp4", "1_9", "vitcop"),
                prefixes.key("/a.mp4", "1_3", "divprune"), ClipPrefixes("m2", options).key("/a.mp4", "1_3", "vitcop"),
                ClipPrefixes("m", options | {"system": "S"}).key("/a.mp4", "1_3", "vitcop"),
                ClipPrefixes("m", options | {"frames": 8}).key("/a.mp4", "1_3", "vitcop")}) == 7
    prefixes.keep("/a.mp4", "1_3", "vitcop", "KV-a")
    prefixes.keep("/a.mp4", "1_3", "vitcop", None)  # a job that kept nothing leaves the prefix there
    assert prefixes.get("/a.mp4", "1_3", "vitcop") == "KV-a" and prefixes.get("/a.mp4", "1_9", "vitcop") is None
    prefixes.enter("/b.mp4")  # the next clip: the last one's prefixes are let go
    assert prefixes.kept == {} and prefixes.get("/a.mp4", "1_3", "vitcop") is None


def test_expected_reuse_follows_consecutive_items_and_their_jobs():
    from types import SimpleNamespace

    p13, p19 = SimpleNamespace(label="1_3"), SimpleNamespace(label="1_9")
    def entry(video, *todo):
        return SimpleNamespace(item=SimpleNamespace(video=video), todo=list(todo))

    mine = [entry("a", ("vitcop", p13)), entry("a", ("vitcop", p13), ("vitcop", p19), ("fastv", p13)),
            entry("a", ("vitcop", p19)), entry("b", ("vitcop", p13)), entry("a", ("vitcop", p13))]
    got = expected_reuse(mine, lambda m: m != "fastv")
    assert [got[id(e)] for e in mine] == [set(), {("vitcop", "1_3")}, {("vitcop", "1_9")}, set(), set()]


def test_a_scripted_batch_counts_reuses_per_group_and_falls_back_on_a_miss(tmp_path, good_clips):
    class Missing(FakeSession):  # every kept prefix turns out not to cover the prompt
        def answer(self, prepared, *, prefix=None, **kw):
            if prefix is not None:
                prefix.ident = None
            return super().answer(prepared, prefix=prefix, **kw)

    items = items_from_folder(good_clips, ["Q1", "Q2"])
    fake = FakeSession({})
    summary = run_batch(fake, items, tmp_path / "out.jsonl", presets=["none", "1_9"], frames=FRAMES)
    assert (summary.prefix_reuses, summary.prefix_saved_s) == (6, pytest.approx(1.5))  # Q2 of 3 clips x 2 presets
    assert [(g.preset, g.prefix_reuses) for g in summary.groups] == [("none", 3), ("1_9", 3)]
    assert fake.prepare_threads == {"vitcop-batch-prefetch"}  # tokens-only prompts are prefetched too
    plain = run_batch(FakeSession({}), items, tmp_path / "plain.jsonl", presets=["none", "1_9"], frames=FRAMES,
                      reuse_prefixes=False)  # what batch did before: every job afresh
    assert (plain.ok, plain.prefix_reuses) == (12, 0)
    assert not any(r["prefix"]["reused"] for r in lines_of(tmp_path / "plain.jsonl"))
    missing = Missing({})
    s = run_batch(missing, items, tmp_path / "miss.jsonl", presets=["none", "1_9"], frames=FRAMES)
    recs = lines_of(tmp_path / "miss.jsonl")
    assert (s.ok, s.prefix_reuses) == (12, 0) and not any(r["prefix"]["reused"] for r in recs)
    assert [r["prefix"]["reason"] for r in recs if r["question"] == "Q2"] == ["a miss"] * 6
    assert "MainThread" in missing.prepare_threads  # the fallback prepared its pixels on demand
