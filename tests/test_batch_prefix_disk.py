"""``vitcop batch --prefix-cache DIR``: the on-disk tier of batch prefix reuse (:mod:`vitcop_cli.batch.disk`).

On the tiny Qwen2-VL with re-drawn weights (``test_batch_prefix``'s: answers depend on clip, question and preset,
so equal tokens are no coincidence; ``--frames 4``, 3 new tokens): a first run saves each clip's prefix under the
key ``prefix_key`` gives (the media's content, so ``ask --prefix-cache`` shares it); a second run into another
``--out``, on renamed copies of the clips, answers each clip's first question from disk without decoding it, with
the first run's tokens; a job the store does not serve (another preset) decodes the clip beside a hit; a damaged
file is a miss with one warning and a correct, re-saved line; the CLI takes the options and refuses a bad size
before a model loads. No timing assertions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_batch import invoke, lines_of
from test_batch_prefix import FRAMES, MAX_NEW, QUESTIONS, Fresh, session  # noqa: F401 - session is a fixture

from vitcop_cli.api import PrefixStore
from vitcop_cli.batch import items_from_jsonl, run_batch
from vitcop_cli.session.prefix_key import ClipOptions
from vitcop_cli.session.prefix_store import prefix_key

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _media(root: Path, names: dict[str, str]) -> Path:
    """``names``: {clip in QUESTIONS: file name here}; the questions file points at the copies."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLES / "shapes.mp4", root / names["a.mp4"])
    shutil.copy(SAMPLES / "bounce.mp4", root / names["b.mp4"])
    (root / "questions.jsonl").write_text("".join(json.dumps({"id": i, "video": names[v], "question": q}) + "\n"
                                                  for i, v, q in QUESTIONS))
    return root


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return _media(tmp_path_factory.mktemp("disk_media"), {"a.mp4": "a.mp4", "b.mp4": "b.mp4"})


@pytest.fixture(scope="module")
def fresh(session, media) -> Fresh:  # noqa: F811
    return Fresh(session, media)


def _run(session, qfile: Path, out: Path, store, **options):  # noqa: F811
    return run_batch(session, items_from_jsonl(qfile), out, frames=FRAMES, max_new_tokens=MAX_NEW,
                     prefix_store=store, **options)


@pytest.fixture(scope="module")
def filled(session, media, tmp_path_factory):  # noqa: F811
    """A first run with the store: (the store's folder, its lines)."""
    root = tmp_path_factory.mktemp("disk_first")
    _run(session, media / "questions.jsonl", root / "out.jsonl", PrefixStore(root / "cache"), presets=["1_3"])
    return root / "cache", lines_of(root / "out.jsonl")


def _key(session, path: Path, preset: str = "1_3") -> str:  # noqa: F811
    return prefix_key(session, path, ClipOptions(preset=preset, method="vitcop", frames=FRAMES))


def _decodes(session, monkeypatch) -> list:  # noqa: F811
    calls, load = [], session.load_visual
    monkeypatch.setattr(session, "load_visual", lambda path, **kw: calls.append(path) or load(path, **kw))
    return calls


def test_a_first_run_saves_each_clip_prefix_under_its_content_key(session, media, fresh, filled):  # noqa: F811
    cache, recs = filled
    assert [r["prefix"]["source"] for r in recs] == ["built", "memory", "memory", "built"]
    assert [r["generated_ids"] for r in recs] == [fresh[(i, "1_3")] for i, _, _ in QUESTIONS]
    # the key is prefix_key's (what ask --prefix-cache looks up): one file per clip
    assert sorted(p.name for p in PrefixStore(cache).files()) == sorted(
        f"{_key(session, media / v)}.safetensors" for v in ("a.mp4", "b.mp4"))
    assert not any(w.startswith("prefix cache:") for r in recs for w in r["warnings"])


def test_a_second_run_on_renamed_copies_answers_from_disk_without_decoding(session, filled, tmp_path,
                                                                          monkeypatch):  # noqa: F811
    cache, first = filled
    store = tmp_path / "cache"
    shutil.copytree(cache, store)
    copies = _media(tmp_path / "copies", {"a.mp4": "x.mp4", "b.mp4": "y.mp4"})  # same bytes, other names
    decodes = _decodes(session, monkeypatch)
    summary = _run(session, copies / "questions.jsonl", tmp_path / "out.jsonl", PrefixStore(store), presets=["1_3"])
    recs = lines_of(tmp_path / "out.jsonl")
    assert decodes == []  # every clip's first job was a hit: nothing decoded
    assert [r["prefix"]["source"] for r in recs] == ["disk", "memory", "memory", "disk"]
    assert all(r["prefix"]["reused"] for r in recs) and recs[0]["prefix"]["saved_s"] > 0
    assert [r["generated_ids"] for r in recs] == [r["generated_ids"] for r in first]
    assert [r["visual"]["path"] for r in recs] == [str((copies / n).resolve()) for n in ("x.mp4",) * 3 + ("y.mp4",)]
    assert [r["tokens"] for r in recs] == [r["tokens"] for r in first]
    assert (summary.ok, summary.prefix_reuses) == (4, 4)


def test_a_job_the_store_does_not_serve_decodes_the_clip_beside_a_hit(session, media, fresh, filled, tmp_path,
                                                                      monkeypatch):  # noqa: F811
    cache, _ = filled
    shutil.copytree(cache, tmp_path / "cache")
    store = PrefixStore(tmp_path / "cache")
    expected = [fresh[("q4", p)] for p in ("1_3", "1_9")]  # asked before decodes are counted
    decodes = _decodes(session, monkeypatch)
    items = items_from_jsonl(media / "questions.jsonl")[3:]  # q4 on b.mp4: stored under 1_3, not under 1_9
    run_batch(session, items, tmp_path / "out.jsonl", presets=["1_3", "1_9"], frames=FRAMES, max_new_tokens=MAX_NEW,
              prefix_store=store)
    recs = {r["preset"]: r for r in lines_of(tmp_path / "out.jsonl")}
    assert len(decodes) == 1  # the 1_9 job needs the pixels
    assert (recs["1_3"]["prefix"]["source"], recs["1_9"]["prefix"]["source"]) == ("disk", "built")
    assert [recs[p]["generated_ids"] for p in ("1_3", "1_9")] == expected
    assert store.path(_key(session, media / "b.mp4", "1_9")).is_file()  # the miss saved what it built


def test_a_damaged_file_is_a_miss_with_one_warning_and_a_correct_line(session, media, fresh, filled,
                                                                      tmp_path):  # noqa: F811
    cache, _ = filled
    shutil.copytree(cache, tmp_path / "cache")
    store = PrefixStore(tmp_path / "cache")
    damaged = store.path(_key(session, media / "a.mp4"))
    data = bytearray(damaged.read_bytes())
    data[-100] ^= 0xFF  # a flipped byte in the tensors: the checksum no longer matches
    damaged.write_bytes(bytes(data))
    summary = _run(session, media / "questions.jsonl", tmp_path / "out.jsonl", store, presets=["1_3"])
    recs = lines_of(tmp_path / "out.jsonl")
    assert summary.ok == 4 and not any(r["error"] for r in recs)
    assert [r["prefix"]["source"] for r in recs] == ["built", "memory", "memory", "disk"]
    assert [r["generated_ids"] for r in recs] == [fresh[(i, "1_3")] for i, _, _ in QUESTIONS]
    warned = [(r["id"], w) for r in recs for w in r["warnings"] if w.startswith("prefix cache:")]
    assert len(warned) == 1 and warned[0][0] == "q1" and "was not used" in warned[0][1]
    assert store.load(damaged.stem, session) is not None  # removed, then saved again whole by q1


def test_a_hit_that_does_not_cover_the_prompt_decodes_the_clip_and_answers_afresh(session, media, fresh, tmp_path,
                                                                                  monkeypatch):  # noqa: F811
    """A stored prefix built for other tokens (another system prompt; the key keeps it apart, here it is forced in)
    is never used: the clip, not decoded ahead (a hit), is decoded on demand and the job answered afresh."""
    foreign = session.open(media / "a.mp4", preset="1_3", method="vitcop", frames=FRAMES, system="Be brief.")
    monkeypatch.setattr(PrefixStore, "load", lambda self, key, s, warnings=None: (foreign.prefix, foreign.visual))
    expected = [fresh[(i, "1_3")] for i, _, _ in QUESTIONS]  # asked before decodes are counted
    decodes = _decodes(session, monkeypatch)
    store = PrefixStore(tmp_path / "cache")
    _run(session, media / "questions.jsonl", tmp_path / "out.jsonl", store, presets=["1_3"], prefetch=False)
    recs = lines_of(tmp_path / "out.jsonl")
    assert [r["prefix"]["source"] for r in recs] == ["built", "memory", "memory", "built"]
    assert "differ from the kept prefix" in recs[0]["prefix"]["reason"] and recs[0]["error"] is None
    assert [r["generated_ids"] for r in recs] == expected
    assert [Path(p).name for p in decodes] == ["a.mp4", "b.mp4"]  # each decoded once, on demand
    assert store.path(_key(session, media / "a.mp4")).is_file()  # what q1 built is saved


@pytest.mark.parametrize("where", ["load", "save", "identity"])
def test_the_cache_failing_in_any_way_never_fails_a_line(session, media, fresh, tmp_path, monkeypatch,
                                                         where):  # noqa: F811
    def boom(*args, **kwargs):
        raise RuntimeError(f"{where} went wrong")

    if where == "identity":
        monkeypatch.setattr("vitcop_cli.session.prefix_file.model_identity", boom)
    else:
        monkeypatch.setattr(PrefixStore, where, boom)
    items = items_from_jsonl(media / "questions.jsonl")[:1]
    summary = run_batch(session, items, tmp_path / "out.jsonl", presets=["1_3"], frames=FRAMES,
                        max_new_tokens=MAX_NEW, prefix_store=PrefixStore(tmp_path / "cache"))
    rec = lines_of(tmp_path / "out.jsonl")[0]
    assert summary.ok == 1 and rec["error"] is None and rec["generated_ids"] == fresh[("q1", "1_3")]
    warned = [w for w in rec["warnings"] if w.startswith("prefix cache:")]
    assert len(warned) == 1 and f"{where} went wrong" in warned[0], rec["warnings"]


def test_the_cli_takes_the_cache_and_refuses_a_bad_size_before_loading(tiny_models, good_clips, tmp_path):
    model = str(tiny_models["qwen2_vl"])
    cache, folder = tmp_path / "cache", tmp_path / "one"
    folder.mkdir()
    shutil.copy(good_clips / "a.mp4", folder / "a.mp4")
    args = ["batch", folder, "-q", "What moves?", "--model", model, "--offline", "--frames", FRAMES,
            "--max-new-tokens", MAX_NEW, "--prefix-cache", cache]
    first = invoke(*args, "--out", tmp_path / "1.jsonl", "--prefix-cache-gb", "0.5")
    assert first.exit_code == 0, (first.output, first.exception)
    second = invoke(*args, "--out", tmp_path / "2.jsonl")
    assert second.exit_code == 0, (second.output, second.exception)
    one, two = lines_of(tmp_path / "1.jsonl")[0], lines_of(tmp_path / "2.jsonl")[0]
    assert (one["prefix"]["source"], two["prefix"]["source"]) == ("built", "disk")
    assert one["generated_ids"] == two["generated_ids"] and len(list(cache.iterdir())) == 1
    for bad, needle in ((["--prefix-cache-gb", "0"], "--prefix-cache-gb"), (["--prefix-cache-gb", "nan"],
                        "--prefix-cache-gb"), (["--prefix-cache", good_clips / "a.mp4"], "not a folder")):
        refused = invoke("batch", folder, "-q", "Q", "--model", "/no/such/model", "--offline",
                         "--out", tmp_path / "3.jsonl", *bad)  # a model that would fail to load: refused first
        lines = refused.stderr.strip().splitlines()
        assert refused.exit_code == 2 and len(lines) == 1 and needle in lines[0], refused.stderr
    assert not (tmp_path / "3.jsonl").exists()
