"""``vitcop serve`` reuses pruned prefixes across requests (issue 26): exact, bounded, never trusted from a client.

Servers here run in this process (uvicorn on 127.0.0.1 in a thread, driven over HTTP by the ``openai`` client),
around the one loaded Session that also computes the fresh references: no second model load. The checkpoint is
``test_serve``'s input-dependent tiny Qwen2-VL (a cache returning the wrong prefix would change the answer).

- A resent multi-turn chat about one video hits (``/metrics`` hits +1, ``vitcop.prefix.reused``) and answers
  exactly what a fresh ``Session.prepare_chat`` + ``Session.generate`` answers; the same bytes sent another way
  (a ``data:`` URL) hit too and are reported under their own name.
- Another preset or system prompt misses; text before the visual is answered afresh (``not_covered``), FastV
  keeps nothing (``not_kept``); an edited file misses (the key is the server's own hash of the bytes); a local
  file that changes while it is decoded is answered but not cached; a prefix found under the key but built for
  other tokens (planted) is not used; a FIFO is refused before hashing could block on it.
- ``--prefix-cache-mb 0`` never hits; a small cap evicts the least recently used and never holds more than
  the cap; a prefix larger than the cap is not cached. The LRU itself: eviction order, oversize refusal, and
  its byte bound under concurrent threads.

Requests are cheap (4 frames, 6 new tokens); every metric assertion is a delta or a gauge of the server the test
started, so tests are independent of order (each uses media / system prompts of its own).
"""

from __future__ import annotations

import base64
import contextlib
import random
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_serve import lively_model  # noqa: F401  (a module fixture: the input-dependent tiny checkpoint)

from vitcop_cli import api
from vitcop_cli.serve.config import ServeConfig
from vitcop_cli.serve.metrics import Metrics
from vitcop_cli.serve.prefix_cache import (
    PrefixCache,
    default_capacity,
    held_bytes,
    resolve_capacity,
)
from vitcop_cli.serve.prefix_reuse import shared_system

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
CLIP, IMAGE, OTHER_CLIP = SAMPLES / "shapes.mp4", SAMPLES / "scene.png", SAMPLES / "bounce.mp4"
FRAMES, MAX_NEW = 4, 6
QUESTION = "What happens in the video?"


# --------------------------------------------------------------------------------------------
# in-process servers over one session
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(lively_model):  # noqa: F811
    api.quiet_library_logs()
    return api.load(str(lively_model), device="cpu", offline=True)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("prefix-media")
    for src, name in ((CLIP, "clip.mp4"), (OTHER_CLIP, "other.mp4"), (IMAGE, "image.png")):
        shutil.copy(src, r / name)
    return r


class Served:
    def __init__(self, base: str, model: str, app):
        self.base, self.model, self.app = base, model, app

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key="none", max_retries=0, timeout=120)

    def ask(self, messages: list[dict], **kwargs):
        return self.client().chat.completions.create(model=self.model, messages=messages, max_tokens=MAX_NEW,
                                                     **kwargs)

    def metrics(self) -> dict:
        text = httpx.get(self.base + "/metrics", timeout=30).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


@contextlib.contextmanager
def serving(session, root: Path, **config):
    """``create_app`` on a real socket, uvicorn in a thread of this process; stopped on exit."""
    import uvicorn

    from vitcop_cli.serve import create_app
    from vitcop_cli.serve.server import bind

    cfg = ServeConfig(model=session.name, frames=FRAMES, max_new_tokens=MAX_NEW, allowed_media_roots=(root,),
                      **config).check()
    app = create_app(session, cfg)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # a bound on failure, not a timing assertion
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the in-process server did not start"
    try:
        yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}", cfg.model, app)
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


@pytest.fixture(scope="module")
def main(session, root):
    """The server most tests share: a 1 MiB prefix cache (room for several 4-frame clips of this model)."""
    with serving(session, root, prefix_cache_bytes=2**20) as served:
        yield served


def metric(snapshot: dict, name: str, **labels) -> float:
    return snapshot.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: dict, after: dict):
    return lambda name, **labels: metric(after, name, **labels) - metric(before, name, **labels)


def video(url: str, question: str = QUESTION, kind: str = "video", system: str | None = None) -> list[dict]:
    turns = [{"role": "system", "content": system}] if system is not None else []
    return turns + [{"role": "user", "content": [{"type": f"{kind}_url", f"{kind}_url": {"url": url}},
                                                {"type": "text", "text": question}]}]


def hf(messages: list[dict], kind: str = "video") -> list[dict]:
    """The OpenAI messages of these tests as Hugging Face chat messages (what ``Session.prepare_chat`` takes)."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        else:
            parts = [{"type": kind} if p["type"].endswith("_url") else {"type": "text", "text": p["text"]}
                     for p in content]
        out.append({"role": m["role"], "content": parts})
    return out


def fresh(session, media: Path, messages: list[dict], kind: str = "video", **options):
    """A fresh answer to ``messages`` about ``media``: decoded, prepared and generated with no kept prefix."""
    prepared = session.prepare_chat(session.load_visual(media, frames=FRAMES), hf(messages, kind))
    return session.generate(prepared, preset=options.pop("preset", "1_3"), max_new_tokens=MAX_NEW, **options)


def report(out) -> dict:
    return out.model_extra["vitcop"]


# --------------------------------------------------------------------------------------------
# a resent chat hits, and answers exactly as a fresh run
# --------------------------------------------------------------------------------------------


def test_a_resent_chat_about_one_video_hits_and_answers_as_fresh(main, session, root):
    url = f"file://{root / 'clip.mp4'}"
    turn1 = video(url, system="You watch videos.")
    before = main.metrics()
    first = main.ask(turn1)
    mid = main.metrics()
    r1 = report(first)
    assert r1["server"]["prefix_cache"] == "absent" and r1["prefix"]["reused"] is False
    assert r1["prefix"]["source"] == "built" and r1["prefix"]["bytes"] > 0
    d = delta(before, mid)
    assert d("vitcop_prefix_cache_misses_total", reason="absent") == 1 and d("vitcop_prefix_cache_hits_total") == 0
    assert d("vitcop_prefix_cache_entries") == 1
    assert metric(mid, "vitcop_prefix_cache_bytes") >= r1["prefix"]["bytes"]

    turn2 = [*turn1, {"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "And then, what colour is it?"}]
    second = main.ask(turn2)
    after = main.metrics()
    r2 = report(second)
    d = delta(mid, after)
    assert d("vitcop_prefix_cache_hits_total") == 1 and d("vitcop_prefix_cache_misses_total", reason="absent") == 0
    assert d("vitcop_prefix_cache_entries") == 0
    assert r2["server"]["prefix_cache"] == "hit"
    assert r2["prefix"]["reused"] is True and r2["prefix"]["source"] == "memory" and r2["prefix"]["saved_s"] > 0
    assert r2["prefix"]["tokens"] == r1["prefix"]["tokens"] and r2["prefix"]["kv_tokens"] == r1["prefix"]["kv_tokens"]

    # exactly what a fresh Session answers, for both turns (and not what it answers about another clip)
    ref1, ref2 = fresh(session, CLIP, turn1), fresh(session, CLIP, turn2)
    assert (r1["generated_ids"], first.choices[0].message.content) == (ref1.generated_ids, ref1.answer)
    assert (r2["generated_ids"], second.choices[0].message.content) == (ref2.generated_ids, ref2.answer)
    assert r2["tokens"] == ref2.to_dict()["tokens"] and r2["pruning"] == ref2.to_dict()["pruning"]
    assert fresh(session, OTHER_CLIP, turn2).generated_ids != ref2.generated_ids  # the check can fail

    # streamed, and the same bytes sent inline: hits, reported under the name this request gave
    inline = "data:video/mp4;base64," + base64.b64encode(CLIP.read_bytes()).decode()
    turn2_inline = [*video(inline, system="You watch videos."), *turn2[2:]]
    chunks = list(main.ask(turn2_inline, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason).model_extra["vitcop"]
    assert text == ref2.answer and final["server"]["prefix_cache"] == "hit"
    assert final["visual"]["path"] == "data:video/mp4"
    assert delta(after, main.metrics())("vitcop_prefix_cache_hits_total") == 1


def test_an_image_is_reused_too(main, session, root):
    url = str(root / "image.png")
    first, second = (main.ask(video(url, "What is in the picture?", kind="image", system="Images.")) for _ in "12")
    assert [report(o)["server"]["prefix_cache"] for o in (first, second)] == ["absent", "hit"]
    ref = fresh(session, IMAGE, video(url, "What is in the picture?", kind="image", system="Images."), kind="image")
    assert report(second)["generated_ids"] == ref.generated_ids == report(first)["generated_ids"]


def test_another_preset_or_system_prompt_misses(main, session, root):
    url = str(root / "clip.mp4")
    base = video(url, system="Preset test.")
    before = main.metrics()
    outs = {
        "1_3": main.ask(base),
        "1_9": main.ask(base, extra_body={"vitcop": {"preset": "1_9"}}),
        "system": main.ask(video(url, system="Another system prompt.")),
        "frames": main.ask(base, extra_body={"vitcop": {"frames": 3}}),
        "again": main.ask(base),
    }
    lookups = {name: report(o)["server"]["prefix_cache"] for name, o in outs.items()}
    assert lookups == {"1_3": "absent", "1_9": "absent", "system": "absent", "frames": "absent", "again": "hit"}
    d = delta(before, main.metrics())
    assert d("vitcop_prefix_cache_misses_total", reason="absent") == 4 and d("vitcop_prefix_cache_hits_total") == 1
    assert report(outs["1_9"])["preset"] == "1_9"
    assert report(outs["1_9"])["generated_ids"] == fresh(session, CLIP, base, preset="1_9").generated_ids
    # a client cannot name a key or a hash: unknown vitcop fields are refused
    with pytest.raises(openai.BadRequestError, match="unknown vitcop"):
        main.ask(base, extra_body={"vitcop": {"prefix_key": "0" * 64}})


def test_text_before_the_video_and_fastv_are_misses_answered_fresh(main, session, root):
    url = str(root / "clip.mp4")
    before_text = [{"role": "user", "content": [{"type": "text", "text": "Look at this:"},
                                                {"type": "video_url", "video_url": {"url": url}},
                                                {"type": "text", "text": QUESTION}]}]
    before = main.metrics()
    out = main.ask(before_text)
    fastv = [main.ask(video(url, system="FastV test."), extra_body={"vitcop": {"method": "fastv"}}) for _ in "12"]
    after = main.metrics()
    d = delta(before, after)
    assert report(out)["server"]["prefix_cache"] == "not_covered"
    assert report(out)["generated_ids"] == fresh(session, CLIP, before_text).generated_ids
    assert [report(o)["server"]["prefix_cache"] for o in fastv] == ["not_kept", "not_kept"]
    assert all(report(o)["prefix"]["kept"] is False for o in fastv)
    assert report(fastv[1])["generated_ids"] == fresh(session, CLIP, video(url, system="FastV test."),
                                                      method="fastv").generated_ids
    assert d("vitcop_prefix_cache_misses_total", reason="not_covered") == 1
    assert d("vitcop_prefix_cache_misses_total", reason="not_kept") == 2
    assert d("vitcop_prefix_cache_hits_total") == 0 and d("vitcop_prefix_cache_entries") == 0


def test_the_key_is_the_bytes_read_not_the_name(main, session, root):
    path = root / "edited.mp4"
    shutil.copy(CLIP, path)
    messages = video(str(path), system="Edit test.")
    outs = [main.ask(messages), main.ask(messages)]
    shutil.copy(OTHER_CLIP, path)  # same name, other bytes
    outs.append(main.ask(messages))
    assert [report(o)["server"]["prefix_cache"] for o in outs] == ["absent", "hit", "absent"]
    assert report(outs[1])["generated_ids"] == fresh(session, CLIP, messages).generated_ids
    assert report(outs[2])["generated_ids"] == fresh(session, OTHER_CLIP, messages).generated_ids
    assert report(outs[2])["generated_ids"] != report(outs[1])["generated_ids"]


def test_a_file_changed_while_it_is_decoded_is_answered_but_not_cached(main, session, root, monkeypatch):
    path = root / "changing.mp4"
    shutil.copy(CLIP, path)
    messages = video(str(path), system="Changing file.")
    decode = session.load_visual

    def decode_then_touch(*args, **kwargs):
        visual = decode(*args, **kwargs)
        path.write_bytes(path.read_bytes())  # rewritten while the server decoded it (here: the same bytes)
        return visual

    monkeypatch.setattr(session, "load_visual", decode_then_touch)
    before = main.metrics()
    changed = main.ask(messages)
    monkeypatch.undo()
    assert delta(before, main.metrics())("vitcop_prefix_cache_entries") == 0  # the guard fired: nothing cached
    assert report(changed)["generated_ids"] == fresh(session, CLIP, messages).generated_ids
    assert [report(main.ask(messages))["server"]["prefix_cache"] for _ in "12"] == ["absent", "hit"]


def test_a_fifo_is_refused_before_it_is_hashed(main, root):
    """Hashing reads the file before the decoder would: a FIFO (or device) in the media root must be refused by
    the decoder's own check first, not block the prepare thread on ``open``."""
    import os

    fifo = root / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(openai.BadRequestError, match="not a regular file"):
        main.client().with_options(timeout=60).chat.completions.create(
            model=main.model, messages=video(str(fifo)), max_tokens=MAX_NEW)
    assert report(main.ask(video(str(root / "clip.mp4"), system="After the FIFO.")))["tokens"]["generated"] > 0


def test_a_cached_prefix_whose_tokens_differ_is_not_used(session, root):
    """The key is necessary, not sufficient: a prefix found under a request's key (here planted: built for
    another system prompt) is used only if it covers the request's tokens exactly; else a fresh answer."""
    from vitcop_cli.serve.prefix_reuse import request_key
    from vitcop_cli.serve.request import parse_chat_request

    path = root / "clip.mp4"
    messages = video(str(path), system="The real system prompt.")
    with serving(session, root, prefix_cache_bytes=2**20) as served:
        worker = served.app.state.worker
        req = parse_chat_request({"messages": messages}, worker.config, {served.model})
        key, _ = request_key(worker.reuse.identity, path, req, worker.config, "1_3", "The real system prompt.")
        worker.reuse.cache.put(key, session.open(CLIP, frames=FRAMES, system="A planted prefix."))
        out = served.ask(messages)
        m = served.metrics()
    assert report(out)["server"]["prefix_cache"] == "not_covered" and report(out)["prefix"]["reused"] is False
    assert metric(m, "vitcop_prefix_cache_misses_total", reason="not_covered") == 1
    assert report(out)["generated_ids"] == fresh(session, CLIP, messages).generated_ids


# --------------------------------------------------------------------------------------------
# capacity: off, small, too small
# --------------------------------------------------------------------------------------------


def test_prefix_cache_off_never_hits(session, root):
    with serving(session, root, prefix_cache_bytes=0) as off:
        messages = video(str(root / "clip.mp4"))
        outs = [off.ask(messages), off.ask(messages)]
        m = off.metrics()
    assert [report(o)["server"]["prefix_cache"] for o in outs] == ["off", "off"]
    assert [report(o)["prefix"]["reused"] for o in outs] == [False, False]
    assert report(outs[0])["generated_ids"] == report(outs[1])["generated_ids"]
    assert metric(m, "vitcop_prefix_cache_hits_total") == 0 and metric(m, "vitcop_prefix_cache_entries") == 0
    assert metric(m, "vitcop_prefix_cache_capacity_bytes") == 0
    assert sum(metric(m, "vitcop_prefix_cache_misses_total", reason=r) for r in ("absent", "not_covered")) == 0


def test_a_small_cap_evicts_the_least_recently_used_and_never_exceeds_it(session, root):
    one = held_bytes(session.open(CLIP, frames=FRAMES, system="Cap one."))
    cap = 2 * one + one // 2  # room for two clips of this size, not three
    url = str(root / "clip.mp4")
    with serving(session, root, prefix_cache_bytes=cap) as small:
        lookups = []
        for system in ("Cap one.", "Cap two.", "Cap six.", "Cap six.", "Cap one."):
            lookups.append(report(small.ask(video(url, system=system)))["server"]["prefix_cache"])
            m = small.metrics()
            assert metric(m, "vitcop_prefix_cache_bytes") <= cap
            assert metric(m, "vitcop_prefix_cache_entries") <= 2
        assert metric(m, "vitcop_prefix_cache_capacity_bytes") == cap
        assert metric(m, "vitcop_prefix_cache_evictions_total") == 2  # "one" for "six", then "two" for "one"
    # "one" was evicted as the least recently used when "six" came; "six" stayed
    assert lookups == ["absent", "absent", "absent", "hit", "absent"]


def test_a_prefix_larger_than_the_cap_is_not_cached(session, root):
    messages = video(str(root / "clip.mp4"))
    with serving(session, root, prefix_cache_bytes=1024) as tiny:
        outs = [tiny.ask(messages), tiny.ask(messages)]
        m = tiny.metrics()
    assert [report(o)["server"]["prefix_cache"] for o in outs] == ["absent", "absent"]
    assert metric(m, "vitcop_prefix_cache_oversize_total") == 2
    assert metric(m, "vitcop_prefix_cache_entries") == 0 and metric(m, "vitcop_prefix_cache_bytes") == 0


# --------------------------------------------------------------------------------------------
# the LRU and the shape check, without a model
# --------------------------------------------------------------------------------------------


def fake(size: int) -> SimpleNamespace:
    return SimpleNamespace(nbytes=size, prefix=None, visual=None)


def test_lru_evicts_oldest_first_refuses_oversize_and_stays_under_the_cap():
    metrics = Metrics()
    cache = PrefixCache(250, metrics)
    assert cache.put("a", fake(100)) and cache.put("b", fake(100))
    assert cache.get("a") is not None  # "a" is now the most recently used
    assert cache.put("c", fake(100))
    assert cache.keys() == ["a", "c"] and cache.bytes == 200  # "b", the least recently used, went
    assert cache.put("d", fake(100)) and cache.keys() == ["c", "d"]
    assert not cache.put("huge", fake(251)) and cache.keys() == ["c", "d"]  # oversize: refused, nothing evicted
    assert cache.put("d", fake(150)) and cache.keys() == ["c", "d"] and cache.bytes == 250  # replaced in place
    assert cache.put("e", fake(120)) and cache.keys() == ["e"] and cache.bytes == 120  # both older ones had to go
    assert cache.get("b") is None and len(cache) == 1
    text = metrics.render().decode()
    assert "vitcop_prefix_cache_evictions_total 4.0" in text  # b, a, then c and d for e
    assert "vitcop_prefix_cache_oversize_total 1.0" in text and "vitcop_prefix_cache_capacity_bytes 250.0" in text
    assert f"vitcop_prefix_cache_bytes {float(cache.bytes)}" in text
    off = PrefixCache(0)
    assert not off.enabled and not off.put("a", fake(1)) and off.get("a") is None and len(off) == 0
    with pytest.raises(ValueError):
        PrefixCache(-1)


def test_lru_is_bounded_under_concurrent_threads():
    cap = 1000
    cache = PrefixCache(cap, Metrics())
    peak, errors = [0], []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(400):
                key = f"k{rng.randrange(30)}"
                if rng.random() < 0.5:
                    cache.put(key, fake(rng.randrange(1, 400)))
                else:
                    cache.get(key)
                peak[0] = max(peak[0], cache.bytes)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and peak[0] <= cap
    assert cache.bytes == sum(cache.get(k).nbytes for k in cache.keys())


def test_held_bytes_counts_the_kv_cache_and_an_images_pixels(session):
    clip = session.open(IMAGE)
    w, h = clip.visual.frames.size
    assert held_bytes(clip) >= clip.nbytes + 3 * w * h > clip.nbytes > 0
    video_clip = session.open(CLIP, frames=FRAMES)
    assert video_clip.nbytes <= held_bytes(video_clip) < 2 * video_clip.nbytes  # no pixels kept for a video


def test_default_capacity_and_the_option():
    import psutil

    assert default_capacity("cpu") == int(min(psutil.virtual_memory().total * 0.10, 2048 * 2**20))
    assert resolve_capacity(None, "cpu") == default_capacity("cpu") and resolve_capacity(0, "cpu") == 0
    from vitcop_cli.serve.cli import _cache_phrase, _prefix_cache_bytes

    assert _prefix_cache_bytes(None) is None and _prefix_cache_bytes(1.5) == 3 * 2**19 and _prefix_cache_bytes(0) == 0
    assert _cache_phrase(0) == "prefix cache off" and _cache_phrase(2**30) == "prefix cache 1,024 MiB"


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_bad_prefix_cache_size_fails_before_loading(value):
    from typer.testing import CliRunner

    from vitcop_cli.app import app

    result = CliRunner().invoke(app, ["serve", "--model", "/no/such/model", "--offline", "--prefix-cache-mb", value],
                                env={"NO_COLOR": "1", "COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--prefix-cache-mb" in lines[0], result.stderr


@pytest.mark.parametrize(
    "messages, expected",
    [
        ([{"role": "user", "content": [{"type": "visual"}, {"type": "text", "text": "q"}]}], (True, None)),
        ([{"role": "system", "content": [{"type": "text", "text": "S"}]},
          {"role": "user", "content": [{"type": "visual"}]},
          {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
          {"role": "user", "content": [{"type": "text", "text": "q"}]}], (True, "S")),
        ([{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "visual"}]}], (False, None)),
        ([{"role": "system", "content": [{"type": "text", "text": "S"}, {"type": "text", "text": "T"}]},
          {"role": "user", "content": [{"type": "visual"}]}], (False, None)),
        ([{"role": "system", "content": [{"type": "text", "text": "S"}]},
          {"role": "system", "content": [{"type": "text", "text": "T"}]},
          {"role": "user", "content": [{"type": "visual"}]}], (False, None)),
        ([{"role": "user", "content": [{"type": "text", "text": "hi"}]},
          {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
          {"role": "user", "content": [{"type": "visual"}]}], (False, None)),
    ],
    ids=["plain", "system-multi-turn", "text-first", "system-two-parts", "two-systems", "visual-later"],
)
def test_which_prompts_can_share_a_prefix(messages, expected):
    assert shared_system(messages) == expected
