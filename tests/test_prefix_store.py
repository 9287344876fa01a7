"""The on-disk prefix cache (issue 26, ``PrefixStore``): a file never gives a wrong answer, and never runs code.

1. Round trip on every family (video; images on two): a prefix saved by one ``PrefixStore`` and read by a
   fresh one is the same prefix — every cache tensor and cache-layer attribute (a linear layer's token
   counter too), every field of the engine's record — and continuing it gives logits bit-identical to the
   original's; the answer equals a fresh ``Session.ask`` and says ``reused, source = "disk"``, with the
   stored build costs as ``saved_s``. A renamed copy of the clip hits.
2. Hostile files: truncated, a flipped byte, other versions, another model's file under this key, another
   clip's file, missing tensors, a wrong shape, random bytes: each a miss with exactly one warning line, the
   fresh answer, and a good file saved in its place.
3. Writers: two threads saving one key over and over while a third reads: every read is a hit (never a
   partial file); a write that fails (disk full) is a warning; the size cap evicts least recently used first
   and keeps no file larger than itself.
4. No pickle: a cache file is exactly a safetensors header and the tensor bytes it lists, and loading one
   with ``pickle`` / ``torch.load`` made to raise still hits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import struct
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import pruning
from pruning import compat
from pruning.survivors import PrefillState
from vitcop_cli.api import DEFAULT_METHOD, DEFAULT_PRESET, PrefixStore
from vitcop_cli.errors import InputError
from vitcop_cli.models.devmodels import FAMILIES
from vitcop_cli.session.prefix_file import checksum, encode
from vitcop_cli.session.prefix_key import ClipOptions
from vitcop_cli.session.prefix_store import prefix_key

FRAMES, NEW = 4, 3
QUESTION = "What happens in the video?"
NOT_STORED = {"gathered", "additions"}  # read only during the prefill (see prefix_file's docstring)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _assert_same_prefix(got, want) -> None:
    """Every tensor and attribute of two prefixes equal (the cache's layers, the record, the scalars)."""
    assert len(got.cache.layers) == len(want.cache.layers)
    for i, (x, y) in enumerate(zip(got.cache.layers, want.cache.layers)):
        assert type(x) is type(y)
        diff = [k for k in vars(y) if not _same(vars(x).get(k), vars(y)[k])]
        assert not diff and vars(x).keys() == vars(y).keys(), f"cache layer {i}: {diff}"
    for f in dataclasses.fields(want):
        if f.name not in ("cache", "state"):
            assert _same(getattr(got, f.name), getattr(want, f.name)), f.name
    if want.state is None:
        assert got.state is None
        return
    for f in dataclasses.fields(PrefillState):
        if f.name not in NOT_STORED:
            assert _same(getattr(got.state, f.name), getattr(want.state, f.name)), f"state.{f.name}"


def _logits(session, prefix, inputs):
    """Greedy tokens and logits of the question continuing a copy of ``prefix`` (the engine's own path)."""
    ids = inputs["input_ids"]
    with pruning.attach(session.model, prefix.preset, prefix.method) as handle:
        cache = handle.continue_prefix(prefix)
        out = session.model.generate(input_ids=ids[:, prefix.length:], attention_mask=inputs["attention_mask"],
                                     **compat.generate_cache_kwargs(session.model, cache), max_new_tokens=NEW,
                                     do_sample=False, output_logits=True, return_dict_in_generate=True)
    return out.sequences, torch.stack(out.logits)


def _prefix_warnings(result) -> list[str]:
    return [w for w in result.warnings if w.startswith("prefix cache:")]


@pytest.fixture(scope="module")
def fresh(sessions, clip):
    """{family: the answer of a fresh Session.ask} (video, 4 frames)."""
    return {f: s.ask(clip, QUESTION, frames=FRAMES, max_new_tokens=NEW) for f, s in sessions.items()}


# ---- 1. round trip -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_a_prefix_read_from_disk_is_the_same_prefix_and_answers_exactly(sessions, fresh, clip, tmp_path, family):
    s = sessions[family]
    built = s.open(clip, frames=FRAMES, prefix_store=PrefixStore(tmp_path))
    assert built.source == "memory" and len(PrefixStore(tmp_path).files()) == 1
    renamed = tmp_path / "renamed copy.mp4"
    shutil.copy(clip, renamed)
    disk = s.open(renamed, frames=FRAMES, prefix_store=PrefixStore(tmp_path))  # a fresh store object
    assert disk.source == "disk" and disk.visual.path == str(renamed)
    _assert_same_prefix(disk.prefix.prefix, built.prefix.prefix)
    inputs = s.prepare_prompt(disk.visual, disk.messages(QUESTION)).inputs
    want, got = _logits(s, built.prefix.prefix, inputs), _logits(s, disk.prefix.prefix, inputs)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    a, ref = disk.ask(QUESTION, max_new_tokens=NEW), fresh[family]
    assert a.generated_ids == ref.generated_ids and a.pruning.kv_cache_lengths == ref.pruning.kv_cache_lengths
    assert (a.prefix.reused, a.prefix.source, a.prefix.bytes) == (True, "disk", ref.prefix.bytes)
    assert a.visual.timestamps == ref.visual.timestamps and not _prefix_warnings(a)
    assert a.prefix.saved_s == built.prefix.total_s > 0 and ref.prefix.source == "built"


def test_an_image_prefix_keeps_its_pixels_for_its_prompts(sessions, image, tmp_path):
    s = sessions["llava_onevision"]  # its images' prompts depend on their size (anyres crops)
    ref = s.ask(image, QUESTION, max_new_tokens=NEW)
    s.open(image, prefix_store=PrefixStore(tmp_path))
    disk = s.open(image, prefix_store=PrefixStore(tmp_path))
    answer = disk.ask(QUESTION, max_new_tokens=NEW)
    assert disk.source == "disk" and answer.generated_ids == ref.generated_ids and answer.prefix.source == "disk"
    assert answer.tokens == ref.tokens and disk.visual.frames.size == (ref.visual.width, ref.visual.height)


@pytest.mark.parametrize("preset, dtype", [("none", "float32"), ("1_9", "bfloat16")])
def test_unpruned_and_bfloat16_hybrid_prefixes_round_trip(sessions, tiny_models, clip, tmp_path, preset, dtype):
    """No engine record (preset none); bfloat16 keys beside the linear layers' float32 states (Qwen3.5)."""
    from vitcop_cli import api

    s = sessions["qwen3_5"] if dtype == "float32" else api.load(str(tiny_models["qwen3_5"]), device="cpu",
                                                                 dtype=dtype, offline=True)
    built = s.open(clip, preset=preset, frames=FRAMES, prefix_store=PrefixStore(tmp_path))
    disk = s.open(clip, preset=preset, frames=FRAMES, prefix_store=PrefixStore(tmp_path))
    assert disk.source == "disk" and (disk.prefix.prefix.state is None) == (preset == "none")
    _assert_same_prefix(disk.prefix.prefix, built.prefix.prefix)
    ref, answer = built.ask(QUESTION, max_new_tokens=NEW), disk.ask(QUESTION, max_new_tokens=NEW)  # memory == disk
    assert answer.generated_ids == ref.generated_ids and answer.prefix.source == "disk" and not _prefix_warnings(answer)


def test_open_visual_with_a_key_shares_the_files_of_open(sessions, clip, tmp_path):
    """A front end that decodes first (batch) keys the clip with prefix_key: the same file as Session.open's."""
    s, store = sessions["qwen2_vl"], PrefixStore(tmp_path)
    key = prefix_key(s, clip, ClipOptions(preset=s.check_preset(DEFAULT_PRESET).label, method=DEFAULT_METHOD,
                                          frames=FRAMES))
    first = s.open_visual(s.load_visual(clip, frames=FRAMES), prefix_store=store, prefix_key=key)
    assert first.source == "memory" and [p.stem for p in store.files()] == [key]
    assert s.open(clip, frames=FRAMES, prefix_store=store).source == "disk"
    again = s.open_visual(s.load_visual(clip, frames=FRAMES), prefix_store=store, prefix_key=key)
    assert again.source == "disk" and again.ask(QUESTION, max_new_tokens=NEW).prefix.source == "disk"


def test_a_method_that_reads_the_question_stores_nothing(sessions, clip, tmp_path):
    store = PrefixStore(tmp_path)
    opened = sessions["qwen2_vl"].open(clip, frames=FRAMES, method="fastv", prefix_store=store)
    assert opened.prefix is None and store.files() == []


def test_bad_store_arguments_are_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="prefix cache"):
        PrefixStore(tmp_path / "f")
    with pytest.raises(InputError, match="positive"):
        PrefixStore(tmp_path, max_bytes=0)
    with pytest.raises(ValueError, match="64 hex"):
        PrefixStore(tmp_path).path("../../etc/passwd")


# ---- 2. hostile files --------------------------------------------------------------------------------------
def _rewrite(path, edit):
    """Rewrite a cache file through ``edit(tensors, metadata)``, its checksum recomputed (a well-formed file)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {n: f.get_tensor(n) for n in f.keys()}, f.metadata()
    edit(tensors, meta)
    meta["checksum"] = checksum(meta, tensors)
    save_file(tensors, str(path), metadata=meta)


def _truncate(path, **_):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path, **_):
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # inside the last tensor's bytes
    path.write_bytes(bytes(data))


def _versions(path, **_):
    _rewrite(path, lambda t, m: m.update(versions=json.dumps({**json.loads(m["versions"]), "torch": "2.0.0"})))


def _foreign(path, sessions, clip, key, **_):
    """llava_onevision's file for this clip, under this (qwen2_vl) key."""
    other = sessions["llava_onevision"].open(clip, frames=FRAMES)
    tensors, meta = encode(key, sessions["llava_onevision"], other.prefix, other.visual)
    save_file(tensors, str(path), metadata=meta)


def _other_key(path, **_):
    _rewrite(path, lambda t, m: m.update(key="f" * 64))  # another clip's file, renamed to this key


def _missing(path, **_):
    _rewrite(path, lambda t, m: t.pop(next(n for n in t if n.startswith("state.layer_cols."))))


def _shape(path, **_):
    def edit(t, m):
        name = next(n for n in t if n.endswith(".keys"))
        t[name] = t[name][..., :-1].contiguous()  # a head_dim this model does not have
    _rewrite(path, edit)


def _random(path, **_):
    path.write_bytes(os.urandom(4096))


HOSTILE = {"truncated": (_truncate, "unreadable"), "flipped byte": (_flip, "checksum"),
           "other versions": (_versions, "written by"), "another model": (_foreign, "another model"),
           "another clip": (_other_key, "another clip"), "missing tensor": (_missing, "does not fit"),
           "wrong shape": (_shape, "shape"), "random bytes": (_random, "unreadable")}


@pytest.fixture(scope="module")
def good_file(sessions, clip, tmp_path_factory):
    """A good cache file of the clip on qwen2_vl (4 frames, default preset), as ``Session.open`` saves it."""
    root = tmp_path_factory.mktemp("good")
    sessions["qwen2_vl"].open(clip, frames=FRAMES, prefix_store=PrefixStore(root))
    (path,) = PrefixStore(root).files()
    return path


@pytest.mark.parametrize("case", HOSTILE)
def test_a_file_that_cannot_be_used_is_a_miss_with_one_warning(sessions, fresh, clip, good_file, tmp_path, case):
    s, (spoil, reason) = sessions["qwen2_vl"], HOSTILE[case]
    path = Path(shutil.copy(good_file, tmp_path / good_file.name))
    assert PrefixStore(tmp_path).load(path.stem, s, warnings=[]) is not None  # good before it is spoiled
    spoil(path, sessions=sessions, clip=clip, key=path.stem)
    opened = s.open(clip, frames=FRAMES, prefix_store=PrefixStore(tmp_path))
    answer = opened.ask(QUESTION, max_new_tokens=NEW)
    (line,) = _prefix_warnings(answer)
    assert reason in line and "prefilled afresh" in line and "\n" not in line
    assert opened.source == "memory" and answer.generated_ids == fresh["qwen2_vl"].generated_ids
    assert (answer.prefix.reused, answer.prefix.source) == (False, "built")
    notes = []  # the good file saved in its place
    assert PrefixStore(tmp_path).load(path.stem, s, warnings=notes) is not None and notes == []


def test_without_a_warnings_list_the_line_is_logged(sessions, good_file, tmp_path, caplog):
    s, store = sessions["qwen2_vl"], PrefixStore(tmp_path)
    path = Path(shutil.copy(good_file, tmp_path / good_file.name))
    _random(path)
    assert store.load(path.stem, s) is None and not path.exists()
    lines = [r.getMessage() for r in caplog.records if r.name == "vitcop_cli.session.prefix_store"]
    assert len(lines) == 1 and lines[0].startswith("prefix cache:") and "unreadable" in lines[0]


# ---- 3. writers, failures, the cap -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def opened(sessions, clip):
    return sessions["qwen2_vl"].open(clip, frames=FRAMES)


def test_concurrent_writers_of_one_key_leave_a_whole_file_that_readers_always_see(sessions, opened, tmp_path,
                                                                                     monkeypatch):
    """Two writers of one key stopped half way through their files while a reader loads it: the reader sees
    the old file whole (a hit), both writers succeed, and the file left is whole."""
    import safetensors.torch

    s, key, real = sessions["qwen2_vl"], "a" * 64, safetensors.torch.save_file
    PrefixStore(tmp_path).save(key, s, opened.prefix, opened.visual)
    midway, read, notes, hits = threading.Barrier(3, timeout=30), threading.Event(), [], []

    def slow(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])  # half written ...
        midway.wait()
        read.wait(30)
        Path(filename).write_bytes(data)  # ... and finished after the reader read

    def write():
        PrefixStore(tmp_path).save(key, s, opened.prefix, opened.visual, warnings=notes)
        done.append(True)

    monkeypatch.setattr(safetensors.torch, "save_file", slow)
    done, writers = [], [threading.Thread(target=write) for _ in range(2)]
    for t in writers:
        t.start()
    midway.wait()
    hits.append(PrefixStore(tmp_path).load(key, s, warnings=notes) is not None)
    read.set()
    for t in writers:
        t.join()
    assert hits == [True] and notes == [] and done == [True, True]
    assert sorted(p.name for p in tmp_path.iterdir()) == [key + ".safetensors"]  # no temporary file left
    assert PrefixStore(tmp_path).load(key, s, warnings=notes) is not None and notes == []


def test_a_failed_write_is_a_warning_and_leaves_nothing(sessions, opened, tmp_path, monkeypatch):
    import safetensors.torch

    def full(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    notes = []
    PrefixStore(tmp_path).save("b" * 64, sessions["qwen2_vl"], opened.prefix, opened.visual, warnings=notes)
    assert len(notes) == 1 and "No space left" in notes[0] and list(tmp_path.iterdir()) == []


def test_the_cap_evicts_least_recently_used_first(sessions, opened, tmp_path):
    s = sessions["qwen2_vl"]
    store = PrefixStore(tmp_path)
    store.save("1" * 64, s, opened.prefix, opened.visual)
    size = store.nbytes
    assert size > opened.nbytes  # the KV cache and the record
    store = PrefixStore(tmp_path, max_bytes=int(size * 3.5))
    for i, key in enumerate(("1" * 64, "2" * 64, "3" * 64)):
        store.save(key, s, opened.prefix, opened.visual)
        os.utime(store.path(key), (1000 + i, 1000 + i))  # clear ages, whatever the clock's resolution
    assert store.load("1" * 64, s) is not None  # used now: the newest
    store.save("4" * 64, s, opened.prefix, opened.visual)  # 4 files > 3.5: the least recently used goes
    assert [p.stem[0] for p in store.files()] == ["3", "1", "4"]
    small = PrefixStore(tmp_path, max_bytes=int(size * 1.5))
    small.save("5" * 64, s, opened.prefix, opened.visual)  # never the file just written
    assert [p.stem[0] for p in small.files()] == ["5"]
    notes = []
    PrefixStore(tmp_path, max_bytes=size // 2).save("6" * 64, s, opened.prefix, opened.visual, warnings=notes)
    assert len(notes) == 1 and "alone exceeds" in notes[0] and [p.stem[0] for p in small.files()] == ["5"]


# ---- 4. no pickle ------------------------------------------------------------------------------------------
def test_a_cache_file_is_only_safetensors_and_loading_never_unpickles(sessions, opened, tmp_path, monkeypatch):
    s, key = sessions["qwen2_vl"], "c" * 64
    store = PrefixStore(tmp_path)
    store.save(key, s, opened.prefix, opened.visual)
    data = store.path(key).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    assert all(isinstance(v, str) for v in header.pop("__metadata__").values())
    spans = sorted(tuple(entry["data_offsets"]) for entry in header.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert 8 + n + spans[-1][1] == len(data)  # every byte is the header or a listed tensor's: nothing else in it

    def refuse(*args, **kwargs):
        raise AssertionError("a prefix file was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert PrefixStore(tmp_path).load(key, s) is not None


def test_the_format_names_every_field_it_drops(sessions, opened):
    """A field added to the engine's record must be stored or listed here (the layout hash also changes)."""
    tensors, meta = encode("d" * 64, sessions["qwen2_vl"], opened.prefix, opened.visual)
    stored = set(json.loads(meta["fields"])["state"]) | {n.split(".")[1] for n in tensors if n.startswith("state.")}
    assert {f.name for f in dataclasses.fields(PrefillState)} - stored == NOT_STORED
