"""``vitcop batch``: keys by what ran, the merge, the lock, shares, hostile inputs, signals (one process).

The scripted session of test_batch (``FakeSession``) stands in for a model where exact answers or
counts matter; the tiny checkpoint where the real CLI path is the point. No timing assertions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from test_batch import FakeSession, lines_of
from vitcop_cli import api
from vitcop_cli.app import app
from vitcop_cli.batch import (
    BatchInterrupted,
    BatchItem,
    OutLock,
    items_from_folder,
    printable,
    read_folder,
    read_jsonl,
    record_key,
    run_batch,
)
from vitcop_cli.questions.inputs import MAX_LINE_BYTES
from vitcop_cli.batch.merge import find_parts, merge, part_path
from vitcop_cli.batch.plan import Pending, shares
from vitcop_cli.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
FRAMES = 4


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"NO_COLOR": "1", "COLUMNS": "200"})


def keys_of(recs) -> list:
    return [record_key(r) for r in recs]


# ---------------------------------------------------------------------------------------------
# Keys: what ran (preset content, model identity), none once
# ---------------------------------------------------------------------------------------------


def test_a_custom_preset_named_like_a_builtin_never_reuses_its_results(tmp_path, good_clips):
    fake = FakeSession({})
    items = items_from_folder(good_clips, ["Q"])
    out = tmp_path / "out.jsonl"
    first = run_batch(fake, items, out, presets=["2_9"], frames=FRAMES)
    assert (first.ok, first.groups[0].preset) == (3, "2_9")
    mine = tmp_path / "my.yaml"  # README's invitation: copy a built-in, change a value, keep its name
    mine.write_text((ROOT / "presets" / "2_9.yaml").read_text().replace("vision_keep: 0.4", "vision_keep: 0.6"))
    second = run_batch(fake, items, out, presets=[str(mine)], frames=FRAMES)
    assert (second.ok, second.skipped) == (3, 0)  # before the fix: 0 results, the old figures shown
    label = second.groups[0].preset
    assert label.startswith("2_9@") and label != "2_9"
    assert Counter(r["preset"] for r in lines_of(out)) == {"2_9": 3, label: 3}
    same = tmp_path / "same.yaml"  # identical values: the built-in's results are the right ones
    shutil.copy(ROOT / "presets" / "2_9.yaml", same)
    assert run_batch(fake, items, out, presets=[str(same)], frames=FRAMES).skipped == 3


def test_the_model_key_does_not_depend_on_how_the_path_was_typed(tmp_path, good_clips, monkeypatch):
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    items = items_from_folder(good_clips, ["Q"])
    out = tmp_path / "out.jsonl"
    typed = FakeSession({})
    typed.name = "./m"
    assert run_batch(typed, items, out, frames=FRAMES).ok == 3
    absolute = FakeSession({})
    absolute.name = str(tmp_path / "m") + "/"
    s = run_batch(absolute, items, out, frames=FRAMES)
    assert (s.ok, s.skipped) == (0, 3)
    assert {r["model"] for r in lines_of(out)} == {str((tmp_path / "m").resolve())}


def test_none_runs_once_per_item_whatever_the_methods(tmp_path, good_clips):
    fake = FakeSession({})
    items = items_from_folder(good_clips, ["Q"])
    out = tmp_path / "out.jsonl"
    s = run_batch(fake, items, out, presets=["none", "1_9"], methods=["vitcop", "fastv"], frames=FRAMES)
    assert Counter((p, m) for _, p, m in fake.generated) == {("none", "vitcop"): 3, ("1_9", "vitcop"): 3,
                                                              ("1_9", "fastv"): 3}
    assert [(g.method, g.preset) for g in s.groups] == [("none", "none"), ("vitcop", "1_9"), ("fastv", "1_9")]
    assert (s.jobs, s.ok) == (9, 9)
    recs = lines_of(out)
    assert Counter((r["preset"], r["method"]) for r in recs) == {("none", "none"): 3, ("1_9", "vitcop"): 3,
                                                                 ("1_9", "fastv"): 3}
    again = run_batch(fake, items, out, presets=["none", "1_9"], methods=["fastv"], frames=FRAMES)
    assert (again.ok, again.skipped) == (0, 6)  # none is done, whichever method it ran under


def test_the_seed_reaches_every_generation(tmp_path, good_clips):
    seen = []

    class Seeded(FakeSession):
        def generate(self, prepared, **kw):
            seen.append(kw["seed"])
            return super().generate(prepared, **kw)

    run_batch(Seeded({}), items_from_folder(good_clips, ["Q"]), tmp_path / "o.jsonl", frames=FRAMES, seed=7)
    assert seen == [7, 7, 7]


# ---------------------------------------------------------------------------------------------
# The merge: exactly once, atomic, crash-safe
# ---------------------------------------------------------------------------------------------


def _rec(video, error=None, preset="1_3", **extra) -> dict:
    rec = {"id": video, "video": f"/v/{video}", "question": "Q", "prompt": "Q", "model": "m", "preset": preset,
           "method": "vitcop", "answer": None if error else f"ans-{video}", "error": error}
    rec.update(extra)
    return rec


def _write(path: Path, recs, tail: bytes = b"", raw: list[str] = ()) -> None:
    text = "".join(json.dumps(r) + "\n" for r in recs) + "".join(line + "\n" for line in raw)
    path.write_bytes(text.encode() + tail)


def test_merge_keeps_one_line_per_key_in_place(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps(_rec("a")) + "\n" + json.dumps(_rec("b", error="boom")) + "\n# a note\n")
    _write(part_path(out, 0), [_rec("b"), _rec("c")], tail=b'{"id": "d", "vi')
    _write(part_path(out, 3), [_rec("d", error="bad clip"), _rec("c")])  # c twice: a repeat
    assert [p.name for p in find_parts(out)] == ["out.jsonl.part-00000", "out.jsonl.part-00003"]
    res = merge(out)
    lines = out.read_text().splitlines()
    assert lines[2] == "# a note"
    recs = [json.loads(line) for line in lines if line.startswith("{")]
    assert [(r["id"], r["error"]) for r in recs] == [("a", None), ("b", None), ("c", None), ("d", "bad clip")]
    assert res.written and not find_parts(out) and not (tmp_path / "out.jsonl.merging").exists()
    assert sum(res.part_ok.values()) == 3 and sum(res.part_failed.values()) == 1
    assert {k[0]: v.error for k, v in res.rows.items()} == {"/v/a": None, "/v/b": None, "/v/c": None,
                                                            "/v/d": "bad clip"}
    before = out.stat()
    again = merge(out)  # nothing to do: not rewritten
    assert not again.written and out.stat().st_ino == before.st_ino


def test_merge_replaces_an_error_by_the_last_error_and_a_success_wins(tmp_path):
    out = tmp_path / "out.jsonl"
    _write(out, [_rec("a", error="first")])
    _write(part_path(out, 0), [_rec("a", error="second")])
    merge(out)
    assert [r["error"] for r in lines_of(out)] == ["second"]
    _write(part_path(out, 1), [_rec("a")])
    _write(part_path(out, 2), [_rec("a", error="third")])
    merge(out)
    assert [r["error"] for r in lines_of(out)] == [None]


def test_a_crash_after_the_rename_leaves_repeats_the_next_merge_drops(tmp_path):
    out = tmp_path / "out.jsonl"
    _write(part_path(out, 0), [_rec("a"), _rec("b")])
    _write(part_path(out, 1), [_rec("c", error="x")])
    saved = {p: p.read_bytes() for p in find_parts(out)}
    merge(out)
    merged = out.read_bytes()
    for p, data in saved.items():  # as if killed after the rename, before the parts were removed
        p.write_bytes(data)
    merge(out)
    assert out.read_bytes() == merged and not find_parts(out)


def test_a_crash_before_the_rename_changes_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    _write(out, [_rec("a")])
    _write(part_path(out, 0), [_rec("b")])
    before = out.read_bytes()

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        merge(out)
    monkeypatch.undo()
    assert out.read_bytes() == before and len(find_parts(out)) == 1
    assert not (tmp_path / "out.jsonl.merging").exists()
    merge(out)
    assert [r["id"] for r in lines_of(out)] == ["a", "b"]


def test_merge_refuses_to_rewrite_a_foreign_file(tmp_path):
    out = tmp_path / "notes.jsonl"
    out.write_text("my notes\n")
    with pytest.raises(InputError, match="other than vitcop batch results"):
        merge(out, guard_foreign=True)
    assert out.read_text() == "my notes\n"


# ---------------------------------------------------------------------------------------------
# Shares: deterministic, balanced by cost, a clip on one rank
# ---------------------------------------------------------------------------------------------


def test_shares_are_deterministic_balanced_and_keep_a_clip_on_one_rank(tmp_path):
    pending = []
    for i in range(12):
        video = tmp_path / f"v{i}.mp4"
        video.write_bytes(b"")
        for q in range(1 + i % 3):  # clips with 1-3 questions: unequal costs
            item = BatchItem(video=str(video), question=f"Q{q}")
            pending.append(Pending(item, [("vitcop", None)] * 2, len(pending)))
    split = shares(pending, 3, frames=4)
    assert split == shares(list(pending), 3, frames=4)
    assert sorted(id(p) for s in split for p in s) == sorted(id(p) for p in pending)
    owner = {}
    for rank, share in enumerate(split):
        assert share == sorted(share, key=lambda p: p.index)  # input order within a share
        for p in share:
            assert owner.setdefault(p.item.video, rank) == rank
    loads = [sum(len(p.todo) for p in s) for s in split]
    assert max(loads) - min(loads) <= 6  # at most one clip's cost apart
    assert shares(pending, 1) == [pending]


# ---------------------------------------------------------------------------------------------
# The --out lock
# ---------------------------------------------------------------------------------------------


def test_the_out_lock_refuses_a_second_writer(tmp_path):
    out = tmp_path / "out.jsonl"
    held = OutLock(out)
    with pytest.raises(InputError, match="being written by another vitcop batch"):
        OutLock(out)
    with pytest.raises(InputError, match="being written by another vitcop batch"):
        run_batch(FakeSession({}), [BatchItem(video=str(SAMPLES / "scene.png"), question="Q")], out)
    held.release()
    OutLock(out).release()


def test_the_cli_takes_the_lock_before_loading_the_model(tmp_path, good_clips, monkeypatch):
    def no_load(*_a, **_k):
        raise AssertionError("the model must not load while another batch holds --out")

    monkeypatch.setattr(api, "load", no_load)
    out = tmp_path / "out.jsonl"
    with OutLock(out):
        for extra in ([], ["--nproc", "2"]):
            result = invoke("batch", good_clips, "-q", "Q", "-o", out, "-m", "some/model", *extra)
            assert result.exit_code == 2, result.output
            assert "being written by another vitcop batch" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1


def test_a_second_process_holding_the_lock_stops_the_cli_before_the_model_loads(tmp_path, good_clips,
                                                                                 monkeypatch):
    """The lock is an flock between processes, not only between two holders in one process."""
    def no_load(*_a, **_k):
        raise AssertionError("the model must not load while another process holds --out")

    monkeypatch.setattr(api, "load", no_load)
    out = tmp_path / "out.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom vitcop_cli.batch.lock import OutLock\n"
         "held = OutLock(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(600)", str(out)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = invoke("batch", good_clips, "-q", "Q", "-o", out, "-m", "some/model")
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "is being written by another vitcop batch" in lines[0], lines
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    OutLock(out).release()  # freed when the holder died


# ---------------------------------------------------------------------------------------------
# Inputs: every bad line at once, size and encoding limits, skipped entries, escaped names
# ---------------------------------------------------------------------------------------------


def test_a_questions_file_reports_every_bad_line_at_once(tmp_path):
    q = tmp_path / "q.jsonl"
    lines = [
        '{"video": "a.mp4", "question": "Q"}',
        '{"video": "a.mp4"',
        '{"video": "a.mp4", "question": "Q", "optoins": ["x", "y"]}',
        '["a.mp4"]',
        '{"video": "a.mp4", "question": "Q", "category": "sports"}',
    ]
    q.write_bytes(("\n".join(lines) + "\n").encode() + b'{"video": "\xff.mp4", "question": "Q"}\n'
                  + b'{"video": "a.mp4", "question": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n')
    with pytest.raises(InputError) as info:
        read_jsonl(q)
    msg = str(info.value)
    assert "\n" not in msg and "5 bad lines" in msg
    for needle in ("line 2: not valid JSON", 'line 3: unknown key "optoins" (did you mean "options"?)',
                   "line 4: expected a JSON object", "line 6: not UTF-8 text", f"line 7: longer than {MAX_LINE_BYTES}"):
        assert needle in msg, (needle, msg)
    assert "line 5" not in msg  # an unknown key that is no misspelling is a note, not an error


def test_unknown_keys_are_named_in_a_note(tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text('{"video": "a.mp4", "question": "Q", "category": "x"}\n{"video": "a.mp4", "question": "R", '
                 '"category": "y", "source": 1}\n')
    got = read_jsonl(q)
    assert len(got.items) == 2
    assert got.notes == [f'{q}: ignored unknown keys "category" (lines 1, 2), "source" (line 2); '
                         "known keys: id, video, question, options, answer"]


def test_a_folder_lists_what_it_skipped_and_why(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "x.mp4").mkdir(parents=True)
    (root / "locked").mkdir()
    shutil.copy(SAMPLES / "scene.png", root / "ok.png")
    (root / "gone.mp4").symlink_to(tmp_path / "missing.mp4")
    real_scandir = os.scandir

    def scandir(path="."):  # root reads every folder, so deny one the way chmod 000 would for a user
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    got = read_folder(root, ["Q"])
    assert [i.id for i in got.items] == ["ok.png"]
    assert len(got.notes) == 1
    note = got.notes[0]
    assert note.startswith(f"skipped under {root}: 3:")
    for needle in ("gone.mp4 (broken link)", "locked/ (cannot list: Permission denied)", "x.mp4 (a folder, not a file)"):
        assert needle in note, note


def test_names_with_control_characters_are_escaped():
    assert printable("a\nb\x1b[31mc\u2028") == "a\\nb\\x1b[31mc\\u2028"
    assert printable("plain name.mp4") == "plain name.mp4"


def test_a_failed_line_for_a_file_named_with_a_newline_stays_one_line(tiny_models, tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    (root / "bad\nname.mp4").write_text("not a video")
    result = invoke("batch", root, "-q", "Q", "-o", tmp_path / "o.jsonl", "-m", tiny_models["qwen2_vl"], "--offline",
                    "--frames", FRAMES, "--max-new-tokens", 2, "-p", "none")
    assert result.exit_code == 1, result.output
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed ")]
    assert len(failed) == 1 and failed[0].startswith("failed bad\\nname.mp4 (none none): "), result.stderr


# ---------------------------------------------------------------------------------------------
# The CLI: one up-front preset check, spellings, seed
# ---------------------------------------------------------------------------------------------


def test_a_preset_that_does_not_fit_the_model_is_one_error_up_front(tiny_models, tmp_path, good_clips):
    deep = tmp_path / "deep.yaml"
    deep.write_text((ROOT / "presets" / "1_9.yaml").read_text().replace("shallow_layer: 2", "shallow_layer: 100"))
    out = tmp_path / "out.jsonl"
    result = invoke("batch", good_clips, "-q", "Q", "-o", out, "-m", tiny_models["qwen2_vl"], "--offline",
                    "--frames", FRAMES, "-p", f"none,{deep}")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --preset") and "does not fit" in lines[0], lines
    assert not out.exists() or out.read_text() == ""


def test_max_new_tokens_over_the_positions_is_one_error_up_front(tiny_models, tmp_path, good_clips):
    """Refused before any job runs and before --out is touched (the lock's sidecar aside), exit 2."""
    out = tmp_path / "out.jsonl"
    result = invoke("batch", good_clips, "-q", "Q", "-o", out, "-m", tiny_models["qwen2_vl"], "--offline",
                    "--frames", FRAMES, "--max-new-tokens", 1_000_000_000)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --max-new-tokens 1,000,000,000"), lines
    assert "32,768 positions" in lines[0]  # the tiny Qwen2-VL's max_position_embeddings
    assert result.stdout == "" and not out.exists() and not list(tmp_path.glob("out.jsonl.part-*"))


def test_run_batch_refuses_max_new_tokens_over_the_positions(sessions, tmp_path, good_clips, monkeypatch):
    session = sessions["qwen2_vl"]
    ran = []
    monkeypatch.setattr(session, "generate", lambda *a, **k: ran.append(1))
    out = tmp_path / "out.jsonl"
    out.write_text("")  # an existing --out stays as it was
    items = items_from_folder(good_clips, ["Q"])
    with pytest.raises(InputError, match=r"--max-new-tokens 40,000 does not fit the model's 32,768 positions"):
        run_batch(session, items, out, presets=["none"], frames=FRAMES, max_new_tokens=40_000)
    assert ran == [] and out.read_text() == "" and not list(tmp_path.glob("out.jsonl.*"))


def test_preset_and_method_lists_and_seed_on_the_cli(tiny_models, tmp_path):
    root = tmp_path / "one"
    root.mkdir()
    shutil.copy(SAMPLES / "scene.png", root / "s.png")
    out = tmp_path / "out.jsonl"
    result = invoke("batch", root, "-q", "Q", "-o", out, "-m", tiny_models["qwen2_vl"], "--offline", "--frames",
                    FRAMES, "--max-new-tokens", 2, "--preset", "none,1_9", "--method", "vitcop,fastv", "--seed", 3,
                    "--json")
    assert result.exit_code == 0, result.output
    recs = lines_of(out)
    assert sorted((r["preset"], r["method"]) for r in recs) == [("1_9", "fastv"), ("1_9", "vitcop"), ("none", "none")]
    assert {r["seed"] for r in recs} == {3}
    again = invoke("batch", root, "-q", "Q", "-o", out, "-m", tiny_models["qwen2_vl"], "--offline", "--frames",
                   FRAMES, "--max-new-tokens", 2, "--presets", "none,1_9", "--methods", "fastv", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == 2


def test_nproc_rebuilds_the_command_line_for_the_ranks(tmp_path):
    from typer.main import get_command

    from vitcop_cli.batch.launch import worker_argv

    command = get_command(app).commands["batch"]
    ctx = command.make_context("batch", ["clips", "-o", "o.jsonl", "-q", "Q1", "-q", "Q2", "-p", "none,1_9",
                                         "--no-prefetch", "--frames", "4", "--nproc", "2", "--json"])
    assert worker_argv(ctx) == ["--out", "o.jsonl", "--question", "Q1", "--question", "Q2", "--preset", "none,1_9",
                                "--frames", "4", "--no-prefetch", "--json", "--", "clips"]


# ---------------------------------------------------------------------------------------------
# Interruptions: Ctrl-C does not wait for the prefetcher; SIGTERM / SIGHUP like Ctrl-C
# ---------------------------------------------------------------------------------------------


def test_an_interruption_does_not_wait_for_a_decode_in_flight(tmp_path, good_clips):
    release = threading.Event()
    state = {"inside": False}

    class SlowSecond(FakeSession):
        def prepare(self, visual, question, **kw):
            if visual.path.endswith("b.png"):
                state["inside"] = True
                release.wait(60)  # a long decode
                state["inside"] = False
            return super().prepare(visual, question, **kw)

    def stop_after_first(ev):
        if ev.done == 1:
            while not state["inside"]:  # the prefetcher is busy with the next item
                time.sleep(0.01)
            raise KeyboardInterrupt

    out = tmp_path / "out.jsonl"
    try:
        with pytest.raises(BatchInterrupted):
            run_batch(SlowSecond({}), items_from_folder(good_clips, ["Q"]), out, frames=FRAMES,
                      on_progress=stop_after_first)
        assert state["inside"], "run_batch waited for the prefetch thread's decode"
    finally:
        release.set()
    assert len(lines_of(out)) == 1


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_like_ctrl_c(tiny_models, tmp_path, sig, code):
    root = tmp_path / "clips"
    root.mkdir()
    for i in range(6):
        shutil.copy(SAMPLES / "scene.png", root / f"s{i}.png")
    out = tmp_path / "out.jsonl"
    args = ["batch", str(root), "-o", str(out), "-m", str(tiny_models["qwen2_vl"]), "--offline", "--frames", "4",
            "--max-new-tokens", "2", "-p", "none,1_3,1_9", "--method", "vitcop,fastv,uniform"]
    for q in ("Q1", "Q2", "Q3"):
        args += ["-q", q]
    proc = subprocess.Popen([sys.executable, "-m", "vitcop_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=dict(os.environ, NO_COLOR="1", COLUMNS="200"))
    part = part_path(out, 0)
    try:
        while proc.poll() is None and not (part.exists() and part.read_bytes().count(b"\n") >= 1):
            time.sleep(0.05)
        assert proc.poll() is None, "the batch ended before it could be signalled"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    note = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(note) == 1 and f"({signal.Signals(sig).name})" in note[0], stderr
    assert "run the same command again to resume" in note[0]
    written = int(note[0].split(": ", 1)[1].split()[0])
    recs = lines_of(out)  # the process merged what it wrote before exiting
    assert len(recs) == written >= 1 and not find_parts(out)
    assert len(set(keys_of(recs))) == len(recs)


# ---------------------------------------------------------------------------------------------
# The summary table at 80 columns
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["2_9@3fa1c2d0", "my_preset_x@3fa1c2d0",
                                   "my_very_long_custom_preset_name_x@3fa1c2d0"])
def test_the_summary_fits_80_columns_and_hides_nothing(label):
    from rich.console import Console

    from vitcop_cli.batch import BatchSummary, GroupSummary
    from vitcop_cli.batch.view import render_summary

    def group(method, preset):
        return GroupSummary(method=method, preset=preset, jobs=1000, ok=990, failed=10, skipped=120, skipped_failed=3,
                            answered=990, scored=990, correct=777, accuracy=777 / 990, latency_mean_s=12.345,
                            latency_p95_s=123.456, visual_tokens_mean=1234.0, visual_kept_mean=123.4,
                            kept_ratio_mean=0.1)

    groups = [group("none", "none")] + [group(m, p) for m in ("vitcop", "fastv", "divprune") for p in ("1_9", label)]
    summary = BatchSummary(out="/tmp/out.jsonl", model="/models/Qwen2-VL-2B-Instruct", items=1000, jobs=7000, ok=6930,
                           failed=70, skipped=840, skipped_failed=21, duplicates=0, torn_bytes=0, wall_s=1.0,
                           prefetch=True, interrupted=False, groups=groups, overall=group("all", "all"))
    console = Console(width=80, record=True, color_system=None)
    render_summary(summary, console)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text
    if len(label) <= 20:  # a custom preset's label: whole, on one line, in each method's row
        assert sum(label in line for line in lines) == 3
    else:  # longer than the column can be: folded onto the next lines, still all there
        assert sum("my_very_" in line for line in lines) == sum("@3fa1c2d0" in line for line in lines) == 3
    for method in ("none", "vitcop", "fastv", "divprune"):
        assert any(line.startswith(method + " ") for line in lines), method
    words = text.split()
    for header in ("method", "preset", "ok", "failed", "skipped", "(done)", "accuracy", "latency", "mean", "p95",
                   "visual", "tokens", "kept", "(ratio)", "1000 items"):
        assert header in words or header in " ".join(words), header
    for cell in ("990", "(+3", "old)", "0.785", "(777/990)", "12.345", "123.456", "1234", "123.4", "(0.100)"):
        assert words.count(cell) == len(groups) + 1, cell  # every row shows every figure, none cut off
