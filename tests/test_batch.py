"""``vitcop batch`` / :mod:`vitcop_cli.batch`: items, multiple choice, the resumable JSONL output, the CLI.

Pure parts (prompt, letter parsing, item readers, output reading, aggregation) are unit-tested; runs
use the tiny random checkpoints (``--frames 4 --max-new-tokens 2``) or, where exact answers matter
(accuracy, generation failures), a fake session whose answers are scripted. No timing assertions.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_api import check_ask_dict, n_layers_of
from typer.testing import CliRunner

from pruning.stats import PruningReport
from vitcop_cli.app import app
from vitcop_cli.batch import (
    MC_INSTRUCTION,
    BatchInterrupted,
    BatchItem,
    aggregate,
    gold_letter,
    items_from_folder,
    items_from_jsonl,
    load_done_keys,
    mc_prompt,
    parse_letter,
    read_results,
    record_key,
    run_batch,
)
from vitcop_cli.errors import InputError, PrefixMiss
from vitcop_cli.media.sampling import FrameRule
from vitcop_cli.media.video import load_visual
from vitcop_cli.result import AskResult, MemoryReport, PhaseTimes, PrefixInfo, Timings, TokenCounts, VisualInfo

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
FRAMES = 4
MAX_NEW = 2
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ASK_FIELDS = [f.name for f in dataclasses.fields(AskResult)]
OPTIONS = ["Red", "Blue", "Green", "Yellow"]

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"NO_COLOR": "1", "COLUMNS": "200"})


def lines_of(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "the output must end on a complete line"
    return [json.loads(line) for line in text.splitlines()]


def successful_keys(records: list[dict]) -> list[tuple]:
    return [record_key(r) for r in records if r["error"] is None]


@pytest.fixture
def clips(tmp_path) -> Path:
    """shapes.mp4, scene.png, sub/bounce.mp4 (good); corrupt.mp4 (2 KB of a clip); fake.mp4 (text); notes.txt."""
    root = tmp_path / "clips"
    (root / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES / "shapes.mp4", root / "shapes.mp4")
    shutil.copy(SAMPLES / "scene.png", root / "scene.png")
    shutil.copy(SAMPLES / "bounce.mp4", root / "sub" / "bounce.mp4")
    (root / "corrupt.mp4").write_bytes((SAMPLES / "shapes.mp4").read_bytes()[:2048])
    (root / "fake.mp4").write_text("this is not a video\n")
    (root / "notes.txt").write_text("not media\n")
    return root


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------


def test_mc_prompt_is_the_standard_format():
    assert mc_prompt("What color is the circle?", ["Red", "Blue", "Green"]) == (
        "What color is the circle?\nA. Red\nB. Blue\nC. Green\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert MC_INSTRUCTION == "Answer with the option's letter from the given choices directly."
    item = BatchItem(video="x.mp4", question="  Which?  ", options=[" one ", "two"])
    assert item.prompt == "Which?\nA. one\nB. two\n" + MC_INSTRUCTION
    assert BatchItem(video="x.mp4", question=" Which? ").prompt == "Which?"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A", "A"),
        ("b", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("C) Green", "C"),
        ("D. Yellow", "D"),
        ("Answer: C", "C"),
        ("answer: (d)", "D"),
        ("The answer is (D).", "D"),
        ("The correct answer is B", "B"),
        ("**B**", "B"),
        ("Blue", "B"),
        ("blue.", "B"),
        ("The circle is green.", "C"),
        ("I think the answer would be C, green.", "C"),
        ("I'd say B", "B"),
        ("E", None),  # not an option: only A-D exist
        ("", None),
        (None, None),
        ("Red and blue", None),  # two options named: no pick
        ("none of these", None),
    ],
)
def test_parse_letter(text, expected):
    assert parse_letter(text, OPTIONS) == expected


def test_parse_letter_prefers_the_longest_option_text():
    opts = ["From right to left", "From left to right", "It does not move"]
    assert parse_letter("It moves from left to right", opts) == "B"
    assert parse_letter("red", ["Red", "Dark red"]) == "A"
    assert parse_letter("a dark red one", ["Red", "Dark red"]) == "B"
    assert parse_letter("B", []) is None


@pytest.mark.parametrize(
    "answer, expected",
    [("B", "B"), ("b", "B"), ("(c)", "C"), ("D.", "D"), ("Blue", "B"), (" yellow ", "D"), ("E", None), ("Purple", None)],
)
def test_gold_letter(answer, expected):
    assert gold_letter(answer, OPTIONS) == expected


def test_batch_item_validates_and_normalises(tmp_path):
    item = BatchItem(video=str(tmp_path / "x" / ".." / "a.mp4"), question="Q?", options=OPTIONS, answer="green")
    assert item.video == str((tmp_path / "a.mp4").resolve()) and Path(item.video).is_absolute()
    assert item.expected == "C"
    assert BatchItem(video="a.mp4", question="Q?", answer=" Yes ").expected == "Yes"
    assert BatchItem(video="a.mp4", question="Q?").expected is None
    for kwargs, needle in [
        ({"question": ""}, '"question"'),
        ({"question": "Q", "options": ["only one"]}, "2 to 26"),
        ({"question": "Q", "options": "A,B"}, '"options"'),
        ({"question": "Q", "options": ["x", ""]}, '"options"'),
        ({"question": "Q", "options": OPTIONS, "answer": "Purple"}, "neither an option letter (A-D)"),
        ({"question": "Q", "answer": 3}, '"answer"'),
        ({"question": "Q", "id": [1]}, '"id"'),
    ]:
        with pytest.raises(InputError, match=re.escape(needle)):
            BatchItem(video="a.mp4", **kwargs)


# ---------------------------------------------------------------------------------------------
# Items
# ---------------------------------------------------------------------------------------------


def test_items_from_folder_is_recursive_sorted_and_filters_by_extension(tmp_path):
    root = tmp_path / "data"
    names = ["b.mp4", "a/z.MKV", "a/y.png", "c/d/e.webm", "notes.txt", "x.jsonl", ".hidden.mp4", ".cache/h.mp4", "noext"]
    for rel in names:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    (root / "dir.mp4").mkdir()  # a folder named like a clip is not a clip
    items = items_from_folder(root, ["What happens?"])
    assert [i.id for i in items] == ["a/y.png", "a/z.MKV", "b.mp4", "c/d/e.webm"]
    assert all(Path(i.video).is_absolute() and i.question == "What happens?" for i in items)
    assert items[0].video == str((root / "a" / "y.png").resolve())

    two = items_from_folder(root, ["Q1", "Q2"])
    assert [(i.id, i.question) for i in two[:2]] == [("a/y.png", "Q1"), ("a/y.png#2", "Q2")]
    assert len(two) == 8

    with pytest.raises(InputError, match="--question"):
        items_from_folder(root, [])
    with pytest.raises(InputError, match="--question is empty"):
        items_from_folder(root, [" "])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.md").write_text("x")
    with pytest.raises(InputError, match="no video or image files found"):
        items_from_folder(tmp_path / "empty", ["Q"])


def test_items_from_jsonl_resolves_paths_relative_to_the_file(tmp_path):
    qdir = tmp_path / "set"
    qdir.mkdir()
    abs_clip = tmp_path / "elsewhere.mp4"
    lines = [
        {"id": "one", "video": "clips/a.mp4", "question": "Q1", "options": ["x", "y"], "answer": "B"},
        {"video": str(abs_clip), "question": "Q2", "reference": "ignored field"},
        {"id": 7, "video": "../up.png", "question": "Q3", "answer": "yes"},
    ]
    text = json.dumps(lines[0]) + "\n\n" + json.dumps(lines[1]) + "\n" + json.dumps(lines[2]) + "\n"
    qfile = qdir / "q.jsonl"
    qfile.write_text(text)
    items = items_from_jsonl(qfile)
    assert [i.id for i in items] == ["one", 3, 7]  # the id defaults to the line number
    assert items[0].video == str((qdir / "clips" / "a.mp4").resolve())
    assert items[1].video == str(abs_clip.resolve())
    assert items[2].video == str((tmp_path / "up.png").resolve())
    assert items[0].options == ["x", "y"] and items[0].expected == "B"
    assert items[2].options is None and items[2].expected == "yes"


@pytest.mark.parametrize(
    "bad_line, needle",
    [
        ('{"video": "a.mp4", "question": "Q"', "not valid JSON"),
        ('["a.mp4", "Q"]', "expected a JSON object"),
        ('{"video": "a.mp4"}', 'missing "question"'),
        ('{"question": "Q"}', 'missing "video"'),
        ('{"video": "", "question": "Q"}', '"video" must be a non-empty path'),
        ('{"video": "a.mp4", "question": "  "}', '"question" must be a non-empty string'),
        ('{"video": "a.mp4", "question": "Q", "options": ["x", "y"], "answer": "C"}', "neither an option letter"),
        ('{"video": "a.mp4", "question": "Q", "options": "x"}', '"options" must be a list'),
    ],
)
def test_items_from_jsonl_names_the_bad_line(tmp_path, bad_line, needle):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"video": "a.mp4", "question": "Q"}\n\n' + bad_line + "\n")
    with pytest.raises(InputError) as info:
        items_from_jsonl(qfile)
    msg = str(info.value)
    assert str(qfile) in msg and "line 3: " in msg and needle in msg, msg
    assert "\n" not in msg


def test_items_from_jsonl_rejects_empty_and_binary_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(InputError, match="holds no questions"):
        items_from_jsonl(tmp_path / "empty.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="line 1: not UTF-8 text"):
        items_from_jsonl(tmp_path / "bin.jsonl")
    with pytest.raises(InputError, match="file not found"):
        items_from_jsonl(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------------------------------------
# Output file: reading, torn lines, aggregation
# ---------------------------------------------------------------------------------------------


def _line(video, prompt, preset="1_3", error=None, **extra) -> dict:
    rec = {"video": video, "question": prompt, "prompt": prompt, "model": "m", "preset": preset, "method": "vitcop",
           "error": error, "answer": None if error else "x"}
    rec.update(extra)
    return rec


def test_load_done_keys_ignores_a_torn_last_line_and_failures(tmp_path):
    out = tmp_path / "out.jsonl"
    good = [_line("/v/a.mp4", "Q"), _line("/v/b.mp4", "Q", preset="none")]
    failed = _line("/v/c.mp4", "Q", error="cannot read video")
    torn = json.dumps(_line("/v/d.mp4", "Q"))[:40]
    out.write_text("".join(json.dumps(r) + "\n" for r in [*good, failed]) + "not json\n" + torn)
    # preset none is method-independent: an older line recorded under a method reads as method "none"
    assert load_done_keys(out) == {("/v/a.mp4", "Q", "m", "1_3", "vitcop"), ("/v/b.mp4", "Q", "m", "none", "none")}
    records, torn_bytes = read_results(out)
    assert len(records) == 3 and torn_bytes == 40
    assert load_done_keys(tmp_path / "missing.jsonl") == set()
    assert record_key({"video": "/v", "question": "Q"}) is None  # not one of ours


def test_aggregate_accuracy_latency_and_tokens():
    def rec(correct, total_s, kept, error=None):
        return {
            "error": error, "answer": None if error else "A", "correct": correct,
            "timings": None if error else {"total_s": total_s},
            "tokens": None if error else {"visual": 100},
            "pruning": None if error else {"layer_averaged_visual": kept, "layer_averaged_ratio": kept / 100},
        }

    records = [rec(True, 1.0, 10), rec(False, 2.0, 20), rec(True, 3.0, 30), rec(None, 4.0, 40),
               rec(None, None, None, error="boom")]
    s = aggregate(records)
    assert (s.answered, s.scored, s.correct) == (4, 3, 2)
    assert s.accuracy == pytest.approx(2 / 3)
    assert s.latency_mean_s == pytest.approx(2.5)
    assert s.latency_p95_s == 4.0  # nearest rank: ceil(0.95 * 4) = 4th of 4
    assert s.visual_tokens_mean == 100 and s.visual_kept_mean == pytest.approx(25.0)
    assert s.kept_ratio_mean == pytest.approx(0.25)
    assert aggregate([rec(None, float(i), 1) for i in range(1, 21)]).latency_p95_s == 19.0  # 19th of 20
    empty = aggregate([rec(None, None, None, error="x")])
    assert empty.answered == 0 and empty.accuracy is None and empty.latency_p95_s is None


# ---------------------------------------------------------------------------------------------
# A scripted session: deterministic answers, failures on demand
# ---------------------------------------------------------------------------------------------


class FakeSession:
    """``prepare`` / ``prepare_prompt`` / ``answer`` / ``generate`` like :class:`vitcop_cli.api.Session`; answers
    chosen by question text. ``answer`` keeps a stand-in prefix per (clip, preset, method) and reuses one it is
    handed when it matches (a tokens-only prompt without one raises ``PrefixMiss``, as the library does)."""

    name = "fake-model"
    frame_rule = FrameRule()  # Qwen's: frames paired into temporal patches

    def __init__(self, answers: dict[str, str], fail: set[str] = frozenset()):
        self.answers, self.fail = answers, set(fail)
        self.generated: list[tuple[str, str, str]] = []
        self.prepare_threads: set[str] = set()

    def check_lengths(self, max_new_tokens, prompt_tokens=0):
        """A scripted model has no position limit."""

    def load_visual(self, path, *, fps=None, frames=None, max_frames=768, **decoding):
        """Decoded at source size: a scripted model has no processor to size frames for."""
        return load_visual(path, fps=2.0 if fps is None else fps, frames=frames, max_frames=max_frames,
                           rule=self.frame_rule)

    def prepare(self, visual, question, *, system=None, max_pixels=None, min_pixels=None):
        self.prepare_threads.add(threading.current_thread().name)
        return SimpleNamespace(visual=visual, question=question, preprocess_s=0.01, warnings=[], system=system,
                               tokens_only=False)

    def prepare_prompt(self, visual, messages, *, max_pixels=None, min_pixels=None):
        self.prepare_threads.add(threading.current_thread().name)
        system = messages[0]["content"][0]["text"] if messages[0]["role"] == "system" else None
        return SimpleNamespace(visual=visual, question=messages[-1]["content"][-1]["text"], preprocess_s=0.001,
                               warnings=[], system=system, tokens_only=True)

    def answer(self, prepared, *, preset, method, prefix=None, source="memory", **options):
        ident = (prepared.visual.path, prepared.system, preset.label, method)
        reuse = prefix is not None and prefix.ident == ident
        if prepared.tokens_only and not reuse:
            raise PrefixMiss("the kept prefix does not cover this prompt, and it carries no pixels")
        result = self.generate(prepared, preset=preset, method=method, **options)
        kept = prefix if reuse else SimpleNamespace(ident=ident, total_s=0.25)
        result.prefix = PrefixInfo(kept=True, reused=reuse, source=source if reuse else "built", tokens=110,
                                   kv_tokens=[110, 40], bytes=4096, bytes_unpruned=8192,
                                   saved_s=kept.total_s if reuse else 0.0,
                                   reason="a miss" if prefix is not None and not reuse else None)
        return result, kept

    def generate(self, prepared, *, preset, method, max_new_tokens, temperature, top_p, video_decode_s, seed=None):
        q = prepared.question.splitlines()[0]
        self.generated.append((q, preset.name, method))
        if q in self.fail:
            raise RuntimeError(f"boom on {q}\nsecond line")
        v = prepared.visual
        n = 100
        kept = n * preset.ratio
        return AskResult(
            answer=self.answers.get(q, "A"), question=prepared.question, model=self.name, model_type="fake",
            preset=preset.name, method=method, device="cpu", dtype="float32", attn_implementation="sdpa",
            visual=VisualInfo(path=v.path, kind=v.kind, frames=len(v.timestamps), sampling_fps=v.sampling_fps,
                              source_fps=v.source_fps, duration_s=v.duration_s, timestamps=v.timestamps,
                              width=v.width, height=v.height),
            tokens=TokenCounts(prompt=n + 20, visual=n, generated=1),
            timings=Timings(model_load_s=None, video_decode_s=video_decode_s, preprocess_s=0.01, vision_encoder_s=0.0,
                            prefill_s=0.0, ttft_s=0.0, model_ttft_s=0.0, decode_s=0.0, decode_tokens_per_s=None, pruning_s=0.0,
                            total_s=video_decode_s + 0.01,
                            phases=PhaseTimes(video_decode_s=video_decode_s, preprocess_s=0.01, generate_setup_s=0.0,
                                              vision_encoder_s=0.0, pre_llm_s=0.0, llm_layers_s=0.0, pruning_s=0.0,
                                              first_token_s=0.0, total_s=video_decode_s + 0.01)),
            memory=MemoryReport(device="cpu"),
            pruning=PruningReport(preset=preset.name, method=method, n_visual=n, after_stage1=n, after_stage2=n,
                                  after_stage3=n, shallow_layer=None, deep_layer=None, layer_averaged_visual=kept,
                                  layer_averaged_ratio=kept / n, kv_cache_lengths=[], prefill_flops=1.0,
                                  prefill_flops_unpruned=1.0, flops_ratio=1.0),
        )


def _mc_file(tmp_path: Path) -> Path:
    (tmp_path / "media").mkdir(exist_ok=True)
    shutil.copy(SAMPLES / "shapes.mp4", tmp_path / "media" / "shapes.mp4")
    shutil.copy(SAMPLES / "scene.png", tmp_path / "media" / "scene.png")
    rows = [
        {"id": "q1", "video": "media/shapes.mp4", "question": "Circle color?", "options": OPTIONS, "answer": "A"},
        {"id": "q2", "video": "media/shapes.mp4", "question": "Square color?", "options": OPTIONS, "answer": "Blue"},
        {"id": "q3", "video": "media/scene.png", "question": "Rectangle color?", "options": OPTIONS, "answer": "c"},
        {"id": "q4", "video": "media/scene.png", "question": "Describe it."},
        {"id": "q5", "video": "media/missing.mp4", "question": "Anything?", "options": OPTIONS, "answer": "A"},
    ]
    qfile = tmp_path / "questions.jsonl"
    qfile.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return qfile


def test_multiple_choice_accuracy_is_scored_from_parsed_letters(tmp_path):
    qfile = _mc_file(tmp_path)
    fake = FakeSession({"Circle color?": "(A)", "Square color?": "The answer is C.", "Rectangle color?": "green"})
    out = tmp_path / "out.jsonl"
    summary = run_batch(fake, items_from_jsonl(qfile), out, presets=["none", "1_9"], frames=FRAMES)
    recs = {(r["id"], r["preset"]): r for r in lines_of(out)}
    assert len(recs) == 10
    assert [recs[(q, "none")]["predicted"] for q in ("q1", "q2", "q3")] == ["A", "C", "C"]
    assert [recs[(q, "none")]["expected"] for q in ("q1", "q2", "q3")] == ["A", "B", "C"]
    assert [recs[(q, "none")]["correct"] for q in ("q1", "q2", "q3")] == [True, False, True]
    open_q = recs[("q4", "none")]
    assert open_q["options"] is None and open_q["expected"] is None and open_q["correct"] is None
    assert recs[("q1", "none")]["prompt"] == mc_prompt("Circle color?", OPTIONS)
    assert recs[("q1", "none")]["question"] == "Circle color?"
    missing = recs[("q5", "1_9")]
    assert "file not found" in missing["error"] and missing["answer"] is None and missing["correct"] is None

    assert (summary.ok, summary.failed, summary.exit_code) == (8, 2, 1)
    by_preset = {g.preset: g for g in summary.groups}
    for g in by_preset.values():
        assert (g.scored, g.correct, g.accuracy) == (3, 2, pytest.approx(2 / 3))
        assert (g.ok, g.failed, g.answered) == (4, 1, 4)
    assert by_preset["none"].kept_ratio_mean == pytest.approx(1.0)
    assert by_preset["1_9"].kept_ratio_mean == pytest.approx(1 / 9)
    assert summary.overall.accuracy == pytest.approx(4 / 6)
    # consecutive items on the same clip decode it once
    assert recs[("q2", "none")]["timings"]["video_decode_s"] == 0.0
    assert recs[("q1", "none")]["timings"]["video_decode_s"] > 0.0
    assert fake.prepare_threads == {"vitcop-batch-prefetch"}


def test_generation_failures_are_recorded_and_the_batch_goes_on(tmp_path, good_clips):
    fake = FakeSession({}, fail={"Q2"})
    out = tmp_path / "out.jsonl"
    items = items_from_folder(good_clips, ["Q1", "Q2"])
    summary = run_batch(fake, items, out, frames=FRAMES, prefetch=False)
    recs = lines_of(out)
    assert len(recs) == 6 and summary.ok == 3 and summary.failed == 3 and summary.exit_code == 1
    errors = [r["error"] for r in recs if r["error"]]
    assert errors == ["RuntimeError: boom on Q2 second line"] * 3
    assert [list(r)[:2] for r in recs] == [["id", "schema"]] * 6  # results and errors alike
    assert {r["schema"] for r in recs} == {"vitcop.batch/2"}
    for r in recs:
        if r["error"]:
            assert all(r[f] is None for f in ASK_FIELDS if f not in ("model", "preset", "method", "question"))
            assert (r["model"], r["preset"], r["method"]) == ("fake-model", "1_3", "vitcop")
    assert fake.prepare_threads == {threading.main_thread().name}

    # resume: the failures are retried (and succeed now), successes are not repeated
    fake.fail.clear()
    again = run_batch(fake, items, out, frames=FRAMES)
    assert (again.ok, again.failed, again.skipped, again.exit_code) == (3, 0, 3, 0)
    recs = lines_of(out)
    assert len(recs) == 6  # each retried failure's line was replaced by its success
    assert [r["id"] for r in recs] == [i.id for i in items]  # in the place of the error line
    ok_keys = successful_keys(recs)
    assert len(ok_keys) == len(set(ok_keys)) == 6


def test_skip_failed_leaves_earlier_failures_alone(tmp_path, good_clips):
    fake = FakeSession({}, fail={"Q"})
    out = tmp_path / "out.jsonl"
    items = items_from_folder(good_clips, ["Q"])
    run_batch(fake, items, out, frames=FRAMES)
    fake.fail.clear()
    n_calls = len(fake.generated)
    s = run_batch(fake, items, out, frames=FRAMES, retry_failed=False)
    assert (s.ok, s.failed, s.skipped, s.skipped_failed, s.exit_code) == (0, 0, 0, 3, 1)
    assert len(fake.generated) == n_calls and len(lines_of(out)) == 3


def test_duplicate_items_run_once_and_the_output_is_locked(tmp_path, good_clips):
    fake = FakeSession({})
    items = items_from_folder(good_clips, ["Q"])
    out = tmp_path / "out.jsonl"
    s = run_batch(fake, items + items[:2], out, frames=FRAMES)
    assert (s.items, s.duplicates, s.ok) == (3, 2, 3) and len(lines_of(out)) == 3

    fcntl = pytest.importorskip("fcntl")
    with open(str(out) + ".lock", "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(InputError, match="being written by another vitcop batch"):
            run_batch(fake, items, out, frames=FRAMES)


def test_a_foreign_unterminated_tail_is_kept(tmp_path, good_clips):
    fake = FakeSession({})
    items = items_from_folder(good_clips, ["Q"])
    out = tmp_path / "out.jsonl"
    run_batch(fake, items[:1], out, frames=FRAMES)
    with open(out, "a") as fh:
        fh.write("# a note someone typed")
    s = run_batch(fake, items, out, frames=FRAMES)
    assert (s.ok, s.skipped, s.torn_bytes) == (2, 1, 0)
    lines = out.read_text().splitlines()
    assert lines[1] == "# a note someone typed" and len(lines) == 4
    assert len(load_done_keys(out)) == 3


def test_a_file_holding_only_a_torn_first_line_is_resumed(tmp_path, good_clips):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "a.mp4", "vid')  # killed while writing the very first line
    s = run_batch(FakeSession({}), items_from_folder(good_clips, ["Q"]), out, frames=FRAMES)
    assert (s.ok, s.torn_bytes) == (3, 20) and len(lines_of(out)) == 3


def test_bad_options_fail_before_the_output_is_touched(tmp_path, good_clips):
    fake = FakeSession({})
    items = items_from_folder(good_clips, ["Q"])
    out = tmp_path / "out.jsonl"
    for kwargs, needle in [
        ({"presets": ["nope"]}, "unknown preset"),
        ({"presets": []}, "--presets is empty"),
        ({"methods": ["nope"]}, "unknown pruning method"),
        ({"frames": 4, "fps": 1.0}, "mutually exclusive"),
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"top_p": 0.5}, "--top-p needs --temperature"),
        ({"min_pixels": 10, "max_pixels": 5}, "--min-pixels"),
    ]:
        with pytest.raises(InputError, match=re.escape(needle)):
            run_batch(fake, items, out, **kwargs)
    assert not out.exists()
    with pytest.raises(InputError, match="is a directory"):
        run_batch(fake, items, tmp_path)


# ---------------------------------------------------------------------------------------------
# Tiny models: resume after a torn line, interruption, presets, prefetch
# ---------------------------------------------------------------------------------------------


def test_resume_after_a_torn_line_loses_and_duplicates_nothing(sessions, tmp_path, good_clips):
    session = sessions["qwen2_vl"]
    items = items_from_folder(good_clips, ["What happens?"])
    out = tmp_path / "out.jsonl"
    first = run_batch(session, items, out, presets=["none", "1_9"], frames=FRAMES, max_new_tokens=MAX_NEW)
    assert (first.ok, first.failed, first.exit_code) == (6, 0, 0)
    full = lines_of(out)
    expected_keys = {record_key(r) for r in full}
    assert len(expected_keys) == 6

    data = out.read_bytes()
    starts = [0] + [i + 1 for i, b in enumerate(data) if b == ord("\n")][:-1]
    cut = starts[3] + (starts[4] - starts[3]) // 2  # the middle of the 4th line: 3 whole lines + a torn one
    out.write_bytes(data[:cut])
    assert not out.read_bytes().endswith(b"\n")

    second = run_batch(session, items, out, presets=["none", "1_9"], frames=FRAMES, max_new_tokens=MAX_NEW)
    assert (second.ok, second.skipped, second.failed, second.exit_code) == (3, 3, 0, 0)
    assert second.torn_bytes == cut - starts[3]
    recs = lines_of(out)  # every line parses: the torn tail is gone
    keys = successful_keys(recs)
    assert sorted(keys) == sorted(expected_keys) and len(keys) == len(set(keys)) == len(recs)
    assert {(r["preset"], r["error"]) for r in recs} == {("none", None), ("1_9", None)}

    third = run_batch(session, items, out, presets=["none", "1_9"], frames=FRAMES, max_new_tokens=MAX_NEW)
    assert (third.ok, third.skipped) == (0, 6) and len(lines_of(out)) == 6
    assert third.groups[0].answered == 3  # stats cover the results of earlier runs too


@pytest.mark.parametrize("prefetch", [True, False], ids=["prefetch", "no-prefetch"])
def test_interrupt_then_resume(sessions, tmp_path, good_clips, prefetch):
    session = sessions["qwen2_vl"]
    items = items_from_folder(good_clips, ["Q1", "Q2"])
    out = tmp_path / "out.jsonl"
    seen = []

    def stop_after_two(ev):
        seen.append(ev.done)
        if ev.done == 2:
            raise KeyboardInterrupt

    with pytest.raises(BatchInterrupted) as info:
        run_batch(session, items, out, frames=FRAMES, max_new_tokens=MAX_NEW, prefetch=prefetch,
                  on_progress=stop_after_two)
    assert isinstance(info.value, KeyboardInterrupt)
    assert info.value.summary.interrupted and info.value.summary.ok == 2
    assert seen == [0, 1, 2]
    assert len(lines_of(out)) == 2
    for t in threading.enumerate():  # the prefetcher was not waited for; it ends on its own
        if t.name == "vitcop-batch-prefetch":
            t.join(30)
            assert not t.is_alive()

    resumed = run_batch(session, items, out, frames=FRAMES, max_new_tokens=MAX_NEW, prefetch=prefetch)
    assert (resumed.ok, resumed.skipped, resumed.failed, resumed.exit_code) == (4, 2, 0, 0)
    keys = successful_keys(lines_of(out))
    assert len(keys) == len(set(keys)) == 6


def test_prefetch_gives_the_same_answers(sessions, tmp_path, good_clips):
    session = sessions["qwen2_vl"]
    items = items_from_folder(good_clips, ["What happens?"])
    answers = {}
    for prefetch in (True, False):
        out = tmp_path / f"{prefetch}.jsonl"
        run_batch(session, items, out, presets=["1_3"], frames=FRAMES, max_new_tokens=MAX_NEW, prefetch=prefetch)
        answers[prefetch] = [(r["id"], r["generated_ids"], r["tokens"]) for r in lines_of(out)]
    assert answers[True] == answers[False]


def test_llava_onevision_batch(sessions, tmp_path, good_clips):
    session = sessions["llava_onevision"]
    out = tmp_path / "out.jsonl"
    s = run_batch(session, items_from_folder(good_clips, ["Q"])[:2], out, presets=["1_9"], frames=FRAMES,
                  max_new_tokens=MAX_NEW)
    assert (s.ok, s.failed) == (2, 0)
    assert {r["model_type"] for r in lines_of(out)} == {"llava_onevision"}


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def batch_args(model, source, out, *extra):
    return ["batch", source, "--out", out, "--model", model, "--offline", "--frames", FRAMES,
            "--max-new-tokens", MAX_NEW, *extra]


def test_cli_folder_with_bad_clips(tiny_models, sessions, tmp_path, clips):
    model = str(tiny_models["qwen2_vl"])
    out = tmp_path / "results.jsonl"
    result = invoke(*batch_args(model, clips, out, "--question", "What happens?", "--json"))
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Traceback" not in result.output
    summary = json.loads(result.stdout)
    assert (summary["ok"], summary["failed"], summary["skipped"], summary["exit_code"]) == (3, 2, 0, 1)
    recs = {r["id"]: r for r in lines_of(out)}
    assert sorted(recs) == ["corrupt.mp4", "fake.mp4", "scene.png", "shapes.mp4", "sub/bounce.mp4"]
    for rid in ("corrupt.mp4", "fake.mp4"):
        r = recs[rid]
        assert r["error"] and "\n" not in r["error"] and rid in r["error"]
        assert all(r[f] is None for f in ASK_FIELDS if f not in ("model", "preset", "method", "question"))
        assert r["video"] == str((clips / rid).resolve()) and (r["model"], r["preset"]) == (model, "1_3")
    stderr = ANSI.sub("", result.stderr)
    assert "failed corrupt.mp4" in stderr and "failed fake.mp4" in stderr

    session = sessions["qwen2_vl"]
    for rid, kind in (("shapes.mp4", "video"), ("scene.png", "image")):
        r = recs[rid]
        assert r["error"] is None and isinstance(r["answer"], str)
        assert r["predicted"] is None and r["correct"] is None and r["options"] is None
        check_ask_dict(r, family="qwen2_vl", kind=kind, model=model, preset="1_3", max_new_tokens=MAX_NEW,
                       n_layers=n_layers_of(session), question="What happens?", path=str((clips / rid).resolve()))
    assert recs["sub/bounce.mp4"]["error"] is None
    assert not list(tmp_path.glob("results.jsonl.part-*"))  # merged and removed

    # run again: successes skipped, the two bad clips retried (and failing again); with --skip-failed: nothing runs
    again = invoke(*batch_args(model, clips, out, "--question", "What happens?", "--json"))
    s2 = json.loads(again.stdout)
    assert again.exit_code == 1 and (s2["ok"], s2["failed"], s2["skipped"]) == (0, 2, 3)
    skip = invoke(*batch_args(model, clips, out, "-q", "What happens?", "--json", "--skip-failed"))
    s3 = json.loads(skip.stdout)
    assert skip.exit_code == 1 and (s3["ok"], s3["failed"], s3["skipped"], s3["skipped_failed"]) == (0, 0, 3, 2)
    recs = lines_of(out)
    assert len(recs) == 5 and len(successful_keys(recs)) == 3  # a retried failure replaces its error line
    assert len({record_key(r) for r in recs}) == 5


def test_cli_jsonl_reports_accuracy_and_presets(tiny_models, tmp_path):
    model = str(tiny_models["qwen2_vl"])
    qfile = _mc_file(tmp_path)
    qfile.write_text("".join(line + "\n" for line in qfile.read_text().splitlines()[:4]))  # drop the missing clip
    out = tmp_path / "results.jsonl"
    result = invoke(*batch_args(model, qfile, out, "--presets", "none,1_9", "--json"))
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads(result.stdout)
    assert [(g["method"], g["preset"]) for g in summary["groups"]] == [("none", "none"), ("vitcop", "1_9")]
    for g in summary["groups"]:
        assert g["ok"] == 4 and g["scored"] == 3
        assert isinstance(g["accuracy"], float) and 0.0 <= g["accuracy"] <= 1.0
        assert g["latency_mean_s"] > 0 and g["latency_p95_s"] > 0 and g["visual_kept_mean"] > 0
    kept = {g["preset"]: g["kept_ratio_mean"] for g in summary["groups"]}
    assert kept["none"] == pytest.approx(1.0) and kept["1_9"] < 0.5
    recs = lines_of(out)
    assert sorted({r["preset"] for r in recs}) == ["1_9", "none"] and len(recs) == 8
    assert all(r["predicted"] in (None, "A", "B", "C", "D") for r in recs)
    assert {r["expected"] for r in recs if r["options"]} == {"A", "B", "C"}

    table = invoke(*batch_args(model, qfile, out, "--presets", "none,1_9"))  # all done: the table, exit 0
    assert table.exit_code == 0, table.output
    text = ANSI.sub("", table.stdout)
    assert "accuracy" in text and "1_9" in text and "none" in text
    assert "resuming" in ANSI.sub("", table.stderr)


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing input", "input not found"),
        ("folder without --question", "--question"),
        ("bad preset", "unknown preset"),
        ("bad method", "unknown pruning method"),
        ("out is a directory", "is a directory"),
        ("out folder missing", "does not exist"),
        ("out is the questions file", "is the questions file itself"),
        ("question with jsonl", "--question is for folders"),
        ("bad jsonl line", "line 2"),
        ("single clip", "is a single clip"),
        ("fps and frames", "mutually exclusive"),
        ("empty presets", "--presets is empty"),
        ("out is not a results file", "other than vitcop batch results"),
    ],
)
def test_cli_usage_errors_exit_2(tiny_models, tmp_path, good_clips, case, needle):
    model = str(tiny_models["qwen2_vl"])
    out = tmp_path / "out.jsonl"
    qfile = tmp_path / "q.jsonl"
    bad = '{"video": 3}\n' if case == "bad jsonl line" else ""
    qfile.write_text('{"video": "good/a.mp4", "question": "Q"}\n' + bad)
    source, extra = good_clips, ["-q", "Q"]
    if case == "missing input":
        source = tmp_path / "nope"
    elif case == "folder without --question":
        extra = []
    elif case == "bad preset":
        extra += ["--presets", "none,bogus"]
    elif case == "bad method":
        extra += ["--methods", "vitcop,bogus"]
    elif case == "out is a directory":
        out = tmp_path
    elif case == "out folder missing":
        out = tmp_path / "no" / "out.jsonl"
    elif case == "out is the questions file":
        source, extra, out = qfile, [], qfile
    elif case in ("question with jsonl",):
        source = qfile
    elif case == "bad jsonl line":
        source, extra = qfile, []
    elif case == "single clip":
        source = good_clips / "a.mp4"
    elif case == "fps and frames":
        extra += ["--fps", "1"]
    elif case == "empty presets":
        extra += ["--presets", " , "]
    elif case == "out is not a results file":
        out.write_text("my notes\nno trailing newline")
    result = invoke(*batch_args(model, source, out, *extra))
    assert result.exit_code == 2, (case, result.output, result.exception)
    stderr = ANSI.sub("", result.stderr).strip()
    assert stderr.startswith("error: ") and needle in stderr and len(stderr.splitlines()) == 1, stderr
    assert result.stdout == ""
    if case == "out is not a results file":
        assert out.read_text() == "my notes\nno trailing newline"
    elif case != "out is the questions file":
        assert not (out.is_file() and out.read_text())


def test_cli_help_lists_the_options():
    result = invoke("batch", "--help")
    assert result.exit_code == 0
    text = ANSI.sub("", result.stdout)
    for option in ("--out", "--question", "--presets", "--methods", "--no-prefetch", "--skip-failed", "--json",
                   "--frames", "--max-new-tokens", "--model", "--offline", "--debug"):
        assert option in text, option


# ---------------------------------------------------------------------------------------------
# Rank 0's wait for the other ranks' shares: a hung rank ends the job, progress keeps it waiting
# ---------------------------------------------------------------------------------------------


class FakeDist:
    """Rank 0 of a ``world``-rank job, the other ranks simulated: the store's counters are a dict;
    ``others`` runs at every pause of rank 0's wait (with the fake time) and may move them."""

    def __init__(self, world: int, timeout_s: float, others=lambda ctx, now: None):
        self.rank, self.world, self.host, self.timeout_s = 0, world, "fakehost", timeout_s
        self.is_root = True
        self.counters: dict[str, int] = {}
        self.others = others

    def agree(self, step, fn):
        return fn()

    def add(self, name, n=1):
        self.counters[name] = self.counters.get(name, 0) + n
        return self.counters[name]

    def count(self, name):
        return self.counters.get(name, 0)

    def post(self, payload):
        raise AssertionError("rank 0 posts nothing")

    def messages(self, seen):
        return [], seen

    def finish(self):
        self.add("finished")

    def finished(self):
        return self.count("finished")


@pytest.fixture
def fake_time(monkeypatch):
    """The wait's clock and pause, driven by hand: each pause (1 s polls) advances the clock, nothing waits."""
    from vitcop_cli.batch import dist as dist_mod

    state = SimpleNamespace(now=1000.0, sleeps=0, ctx=None)
    monkeypatch.setattr(importlib.import_module("vitcop_cli.batch.runner"), "_POLL_S", 1.0)  # whole seconds

    def sleep(s):
        state.sleeps += 1
        state.now += s
        if state.ctx is not None:
            state.ctx.others(state.ctx, state.now)

    monkeypatch.setattr(dist_mod, "_clock", lambda: state.now)
    monkeypatch.setattr(dist_mod, "_sleep", sleep)
    return state


def test_rank0_fails_when_no_rank_moves_for_the_timeout_and_keeps_the_parts(tmp_path, good_clips, fake_time):
    from vitcop_cli.batch import merge as merging
    from vitcop_cli.errors import RuntimeFailure

    def others(ctx, now):  # rank 1 writes a job at t=1001 and t=1002, then hangs; rank 2 never finishes
        if now in (1001.0, 1002.0):
            ctx.add("done")

    ctx = FakeDist(world=3, timeout_s=5.0, others=others)
    fake_time.ctx = ctx
    fake = FakeSession({})
    out = tmp_path / "out.jsonl"
    ticks = []
    with pytest.raises(RuntimeFailure) as info:
        run_batch(fake, items_from_folder(good_clips, ["Q"]), out, frames=FRAMES, prefetch=False, dist=ctx,
                  on_progress=lambda p: ticks.append(p.kind))
    msg = str(info.value)
    assert info.value.exit_code == 1 and "\n" not in msg
    assert "2 of 3 ranks have not finished" in msg and "no rank made progress for 5 s" in msg, msg
    assert "stay in the part files next to" in msg and "resumes" in msg and "VITCOP_DIST_TIMEOUT" in msg
    assert fake_time.now == 1007.0  # 5 s after the last progress (t=1002), not 5 s after the wait began
    assert ticks.count("tick") == fake_time.sleeps == 7
    # rank 0's share stays on disk for the next run, nothing merged
    part = merging.part_path(out, 0)
    assert fake.generated and len(lines_of(part)) == len(fake.generated) == ctx.count("done") - 2
    assert not out.exists() or out.read_text() == ""
    # the next run (one process) resumes: rank 0's results are not run again
    again = FakeSession({})
    s = run_batch(again, items_from_folder(good_clips, ["Q"]), out, frames=FRAMES, prefetch=False)
    assert s.skipped == len(fake.generated) and s.ok == 3 - len(fake.generated)
    assert len(lines_of(out)) == 3 and not part.exists()


@pytest.mark.parametrize("counter", ["done", "finished"])
def test_moving_counters_keep_rank0_waiting_past_the_timeout(tmp_path, good_clips, fake_time, counter):
    def others(ctx, now):  # only `counter` moves, every 4 s (< the 5 s timeout), for 60 s; then all finish
        if now >= 1060.0:
            ctx.counters["finished"] = ctx.world
        elif now % 4 == 0:
            ctx.add(counter)

    ctx = FakeDist(world=20 if counter == "finished" else 2, timeout_s=5.0, others=others)
    fake_time.ctx = ctx
    fake = FakeSession({})
    out = tmp_path / "out.jsonl"
    s = run_batch(fake, items_from_folder(good_clips, ["Q"]), out, frames=FRAMES, prefetch=False, dist=ctx)
    assert fake_time.now == 1060.0 and fake_time.sleeps == 60
    assert s.ok == len(fake.generated) and len(lines_of(out)) == len(fake.generated)
