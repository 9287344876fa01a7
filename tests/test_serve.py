"""``vitcop serve`` as a real server process on 127.0.0.1, driven by the official ``openai`` client.

Two server processes, each started once for the tests that need it:

- ``server``: a tiny Qwen2-VL checkpoint whose weights are re-drawn so that its greedy answer depends
  on what it is shown (the stored tiny model answers the same token whatever it sees, which would
  make "the server's answer equals ``Session.ask``'s" vacuous). ``--frames 4 --max-queue 4``, an API
  key, one allowed media root, small body / media caps.
- ``lifecycle``: the stored tiny model (never emits EOS, so a long answer really is long) with a
  short ``--request-timeout``: timeouts, client disconnects and SIGTERM.
- ``idle``: the stored tiny model, never sent a request: SIGHUP (a closed terminal) stops it cleanly.

Nothing here asserts wall-clock times: "the abandoned generation was stopped" is read from the
server's own accounting (``/metrics``: the outcome of each generation and the tokens it produced).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_api import _input_dependent, _redraw_weights
from vitcop_cli import api

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
CLIP, IMAGE, OTHER_CLIP = SAMPLES / "shapes.mp4", SAMPLES / "scene.png", SAMPLES / "bounce.mp4"
QUESTION = "What happens in the video?"
KEY = "test-key-123"
FRAMES = 4
MAX_NEW = 6
LONG = 3000  # an answer far longer than any test waits for: only a cancelled generation ends early
TIMEOUT = 6  # the lifecycle server's --request-timeout (s)
CHAT = "/v1/chat/completions"


# --------------------------------------------------------------------------------------------
# server processes
# --------------------------------------------------------------------------------------------


class Server:
    def __init__(self, proc: subprocess.Popen, base: str, log: Path):
        self.proc, self.base, self.log = proc, base, log

    def client(self, key: str | None = KEY, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=key or "none", max_retries=0, timeout=300, **kwargs)

    def post(self, body, key: str | None = KEY, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        content = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return httpx.post(self.base + CHAT, content=content, headers=headers, timeout=300, **kwargs)

    def metrics(self) -> dict:
        text = httpx.get(self.base + "/metrics", timeout=30).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def metric(snapshot: dict, name: str, **labels) -> float:
    return snapshot.get((name, tuple(sorted(labels.items()))), 0.0)


def launch(model: Path, log: Path, *args, entry: tuple[str, ...] = ("-m", "vitcop_cli.app")) -> tuple[subprocess.Popen, Path]:
    """Start ``vitcop serve`` on a free port (``--port 0``); :func:`ready` waits for it. ``entry``: what
    ``python`` runs instead of ``-m vitcop_cli.app`` (a test-only launcher script and its arguments)."""
    cmd = [sys.executable, *entry, "serve", "--model", str(model), "--port", "0", "--offline",
           "--device", "cpu", "--log-level", "warning", *map(str, args)]
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "400", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("VITCOP_API_KEY", None)
    with open(log, "w") as fh:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh, env=env, cwd=ROOT,
                                preexec_fn=_ctrl_c_as_from_a_terminal), log


def _ctrl_c_as_from_a_terminal() -> None:
    """SIGINT at its default in the server, as a terminal gives it. A test run started as a background job
    (``cmd &`` in a script, as a CI runner may) inherits SIGINT ignored, passes it on, and Python then installs
    no KeyboardInterrupt: the Ctrl-C tests would wait on a server that never sees the signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ready(launched: tuple[subprocess.Popen, Path]) -> Server:
    proc, log = launched
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        text = log.read_text()
        found = re.search(r"on (http://127\.0\.0\.1:\d+)/v1", text)
        if found:
            server = Server(proc, found.group(1), log)
            if httpx.get(server.base + "/health", timeout=30).status_code == 200:
                return server
        if proc.poll() is not None:
            pytest.fail(f"vitcop serve exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"vitcop serve did not come up:\n{log.read_text()}")


@pytest.fixture(scope="module")
def lively_model(tiny_models, tmp_path_factory) -> Path:
    """A tiny Qwen2-VL copy with weights re-drawn until its greedy answer depends on the input (cached)."""
    base = Path(os.environ["VITCOP_TEST_MODELS"]) if os.environ.get("VITCOP_TEST_MODELS") else tmp_path_factory.mktemp("m")
    dest = base / "qwen2_vl-tiny-lively"
    if (dest / "lively.json").exists():
        return dest
    work = base / f".qwen2_vl-tiny-lively.{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(tiny_models["qwen2_vl"], work)
    session = api.load(str(work), device="cpu", offline=True)
    for seed in range(10):
        _redraw_weights(session.model, seed)
        if _input_dependent(session):
            break
    else:
        pytest.fail("no seed in 0..9 gives input-dependent greedy output")
    session.model.save_pretrained(work)
    (work / "lively.json").write_text(json.dumps({"seed": seed}))
    shutil.rmtree(dest, ignore_errors=True)
    work.rename(dest)
    return dest


@pytest.fixture(scope="module")
def media_root(tmp_path_factory) -> Path:
    """The allowed media root: the samples, a corrupt clip, and a symlink pointing out of the root."""
    root = tmp_path_factory.mktemp("media")
    shutil.copy(CLIP, root / "clip.mp4")
    shutil.copy(IMAGE, root / "image.png")
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    (root / "escape.mp4").symlink_to(OTHER_CLIP)  # inside the root by name, outside once resolved
    (root / "sub").mkdir()
    return root


@pytest.fixture(scope="module")
def launched(lively_model, tiny_models, media_root, tmp_path_factory):
    """The server processes, started together (their start-up overlaps); stopped at the end."""
    logs = tmp_path_factory.mktemp("serve")
    procs = {
        "main": launch(lively_model, logs / "main.log", "--frames", FRAMES, "--max-new-tokens", MAX_NEW,
                       "--max-queue", 4, "--api-key", KEY, "--allowed-media-root", media_root, "--max-body-mb", 1,
                       "--max-media-mb", 0.25),
        "lifecycle": launch(tiny_models["qwen2_vl"], logs / "lifecycle.log", "--frames", FRAMES,
                            "--request-timeout", TIMEOUT, "--allowed-media-root", media_root, "--max-new-tokens", LONG),
        "idle": launch(tiny_models["qwen2_vl"], logs / "idle.log"),
    }
    yield procs
    for proc, log in procs.values():
        Server(proc, "", log).stop()


@pytest.fixture(scope="module")
def server(launched):
    return ready(launched["main"])


@pytest.fixture(scope="module")
def reference(lively_model):
    """The same checkpoint in this process: what ``Session.ask`` answers."""
    api.quiet_library_logs()
    session = api.load(str(lively_model), device="cpu", offline=True)
    cache = {}

    def ask(media: Path, **kwargs):
        key = (str(media), tuple(sorted(kwargs.items())))
        if key not in cache:
            args = dict(frames=FRAMES, max_new_tokens=MAX_NEW, preset="1_3")
            args.update(kwargs)
            cache[key] = session.ask(media, QUESTION, **args)
        return cache[key]

    ask.session = session
    return ask


def user(url: str, kind: str = "video", question: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": [{"type": f"{kind}_url", f"{kind}_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


def data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def body(url: str, kind: str = "video", **extra) -> dict:
    return {"messages": user(url, kind), "max_tokens": MAX_NEW, **extra}  # no "model": the served one


def model_id(server) -> str:
    return server.client().models.list().data[0].id


def check_same_as_ask(vitcop: dict, ref) -> None:
    """The response's ``vitcop`` report carries ``ask --json``'s deterministic fields unchanged."""
    d = ref.to_dict()
    for key in ("generated_ids", "tokens", "pruning", "preset", "method", "model_type", "question"):
        assert vitcop[key] == d[key], key
    visual = {k: v for k, v in d["visual"].items() if k != "path"}
    assert {k: v for k, v in vitcop["visual"].items() if k != "path"} == visual
    assert set(d) - {"answer"} <= set(vitcop)
    assert vitcop["timings"]["ttft_s"] > 0 and vitcop["server"]["ttft_s"] >= vitcop["timings"]["ttft_s"]


# --------------------------------------------------------------------------------------------
# answers: equal to Session.ask, streamed or not, video and image, every way of naming the media
# --------------------------------------------------------------------------------------------


def test_health_and_models(server, lively_model):
    assert httpx.get(server.base + "/health").json()["status"] == "ok"  # no key needed
    models = server.client().models.list().data
    assert [m.id for m in models] == [str(lively_model)]


@pytest.mark.parametrize("kind, name", [("video", "clip.mp4"), ("image", "image.png")])
def test_answer_equals_session_ask(server, reference, media_root, kind, name):
    ref = reference(CLIP if kind == "video" else IMAGE)
    other = reference(IMAGE if kind == "video" else CLIP)
    assert ref.generated_ids != other.generated_ids  # precondition: the answer depends on the input
    client = server.client()
    out = client.chat.completions.create(model=model_id(server), messages=user(f"file://{media_root / name}", kind),
                                         max_tokens=MAX_NEW)
    choice = out.choices[0]
    assert out.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.message.content == ref.answer
    assert choice.finish_reason == ("length" if ref.tokens.generated == MAX_NEW else "stop")
    assert out.usage.prompt_tokens == ref.tokens.prompt
    assert out.usage.completion_tokens == ref.tokens.generated
    assert out.usage.total_tokens == ref.tokens.prompt + ref.tokens.generated
    vitcop = out.model_extra["vitcop"]
    check_same_as_ask(vitcop, ref)
    assert vitcop["visual"]["path"] == f"file://{media_root / name}"
    assert vitcop["visual"]["kind"] == kind


@pytest.mark.parametrize("kind", ["video", "image"])
def test_streamed_answer_equals_session_ask(server, reference, media_root, kind):
    ref = reference(CLIP if kind == "video" else IMAGE)
    path = media_root / ("clip.mp4" if kind == "video" else "image.png")
    stream = server.client().chat.completions.create(
        model=model_id(server), messages=user(str(path), kind), max_tokens=MAX_NEW, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2  # really streamed, not one blob
    assert "".join(pieces) == ref.answer
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert finals[0].choices[0].finish_reason == ("length" if ref.tokens.generated == MAX_NEW else "stop")
    check_same_as_ask(finals[0].model_extra["vitcop"], ref)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == ref.tokens.generated
    assert chunks[-1].usage.prompt_tokens == ref.tokens.prompt
    assert all(c.usage is None for c in chunks[:-1])


def test_data_urls_and_plain_paths_give_the_same_answer(server, reference, media_root):
    client, model = server.client(), model_id(server)
    for url, kind, media in [
        (data_url(CLIP, "video/mp4"), "video", CLIP),
        (data_url(IMAGE, "image/png"), "image", IMAGE),
        (str(media_root / "clip.mp4"), "video", CLIP),
        (f"file://{media_root / 'sub' / '..' / 'image.png'}", "image", IMAGE),
    ]:
        out = client.chat.completions.create(model=model, messages=user(url, kind), max_tokens=MAX_NEW)
        assert out.choices[0].message.content == reference(media).answer, url[:40]
        assert out.model_extra["vitcop"]["visual"]["path"] == (url if not url.startswith("data:") else url.split(";")[0])


def test_multi_turn_chat_goes_through_the_chat_template(server, reference, media_root):
    session = reference.session
    messages = [
        {"role": "system", "content": "You are terse."},
        *user(f"file://{media_root / 'clip.mp4'}"),
        {"role": "assistant", "content": [{"type": "text", "text": "A square moves."}]},
        {"role": "user", "content": "And then?"},
    ]
    out = server.client().chat.completions.create(model=model_id(server), messages=messages, max_tokens=MAX_NEW)
    hf = [
        {"role": "system", "content": [{"type": "text", "text": "You are terse."}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A square moves."}]},
        {"role": "user", "content": [{"type": "text", "text": "And then?"}]},
    ]
    prepared = session.prepare_chat(session.load_visual(CLIP, frames=FRAMES), hf)  # decoded as the server does
    expected = session.generate(prepared, preset="1_3", max_new_tokens=MAX_NEW)
    assert out.choices[0].message.content == expected.answer
    vitcop = out.model_extra["vitcop"]
    assert vitcop["generated_ids"] == expected.generated_ids
    assert vitcop["question"] == "And then?"
    assert vitcop["tokens"]["prompt"] > reference(CLIP).tokens.prompt  # the earlier turns are in the prompt


def test_vitcop_knobs_seed_and_stop(server, reference, media_root):
    client, model, url = server.client(), model_id(server), str(media_root / "clip.mp4")
    # per-request preset and frames
    ref = reference(CLIP, preset="none", frames=6)
    out = client.chat.completions.create(model=model, messages=user(url), max_tokens=MAX_NEW,
                                         extra_body={"vitcop": {"preset": "none", "frames": 6}})
    vitcop = out.model_extra["vitcop"]
    assert vitcop["preset"] == "none" and vitcop["visual"]["frames"] == 6
    assert out.choices[0].message.content == ref.answer
    # seeded sampling repeats, and equals Session.ask with the same seed
    sampled = [client.chat.completions.create(model=model, messages=user(url), max_tokens=MAX_NEW, temperature=1.5,
                                              top_p=0.9, seed=7).choices[0].message.content for _ in range(2)]
    assert sampled[0] == sampled[1] == reference(CLIP, temperature=1.5, top_p=0.9, seed=7).answer
    # a stop string cuts the answer before it (not included) and ends generation there
    full = reference(CLIP, max_new_tokens=MAX_NEW)
    raw = reference.session.processor.tokenizer.decode(full.generated_ids, skip_special_tokens=True)
    words = raw.split()
    assert len(words) >= 3, raw
    stop = " " + words[1]  # first seen after the first word: generation must end early
    expected = raw[: raw.index(stop)].strip()
    for stream in (False, True):
        out = client.chat.completions.create(model=model, messages=user(url), max_tokens=MAX_NEW, stop=[stop],
                                             stream=stream, stream_options={"include_usage": True} if stream else None)
        if stream:
            chunks = list(out)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            reason = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
            usage = chunks[-1].usage
        else:
            text, reason, usage = out.choices[0].message.content, out.choices[0].finish_reason, out.usage
        assert text == expected
        assert reason == "stop"
        assert usage.completion_tokens < MAX_NEW  # the stop string ended generation


# --------------------------------------------------------------------------------------------
# refusals: paths, keys, malformed bodies, sizes, bad media — and the server keeps serving
# --------------------------------------------------------------------------------------------


def expect_error(response: httpx.Response, status: int, *needles: str) -> dict:
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    assert "\n" not in err["message"] and "Traceback" not in err["message"]
    for needle in needles:
        assert needle in err["message"], err["message"]
    return err


def test_paths_outside_the_allowed_root_are_refused(server, media_root):
    outside = expect_error(server.post(body(str(CLIP))), 400, "outside", "--allowed-media-root")
    assert outside["type"] == "invalid_request_error"
    expect_error(server.post(body(f"file://{CLIP}")), 400, "outside")
    expect_error(server.post(body(str(media_root / "escape.mp4"))), 400, "outside")  # a symlink out of the root
    expect_error(server.post(body(str(media_root / ".." / CLIP.name))), 400, "outside")
    expect_error(server.post(body("samples/shapes.mp4")), 400, "not absolute")
    expect_error(server.post(body("https://example.com/a.mp4")), 400, "--allow-remote-media")
    expect_error(server.post(body("ftp://example.com/a.mp4")), 400, "scheme")
    with pytest.raises(openai.BadRequestError):
        server.client().chat.completions.create(model=model_id(server), messages=user(str(CLIP)))
    (media_root / "escape.mp4").resolve(strict=True)  # the link is fine: only the policy refused it


def test_api_key_is_required(server):
    good = body(data_url(IMAGE, "image/png"))
    expect_error(server.post(good, key=None), 401, "API key")
    err = expect_error(server.post(good, key="wrong"), 401, "API key")
    assert err["code"] == "invalid_api_key"
    assert httpx.get(server.base + "/v1/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").models.list()
    assert server.post(good).status_code == 200


@pytest.mark.parametrize(
    "raw, needles",
    [
        (b"{not json", ["not valid JSON"]),
        (b"[1, 2]", ["JSON object"]),
        ({"messages": []}, ["messages"]),
        ({"messages": user("data:image/png;base64,AAAA", "image"), "max_tokens": 0}, ["max_tokens", "at least 1"]),
        ({"messages": user("data:image/png;base64,AAAA", "image"), "temperature": "hot"}, ["temperature"]),
        ({"messages": user("data:image/png;base64,AAAA", "image"), "vitcop": {"preset": "bogus"}},
         ["unknown preset 'bogus'", "1_3"]),
        ({"messages": user("data:image/png;base64,AAAA", "image"), "vitcop": {"preset": "/etc/passwd"}},
         ["unknown preset"]),
        ({"messages": user("data:image/png;base64,AAAA", "image"), "vitcop": {"method": "nope"}},
         ["unknown pruning method 'nope'"]),
        ({"messages": user("data:image/png;base64,AAAA", "image"), "vitcop": {"fps": 1, "frames": 4}},
         ["mutually exclusive"]),
        ({"messages": user("data:image/png;base64,AAAA", "image"), "vitcop": {"colour": 1}}, ["unknown vitcop"]),
        ({"messages": user("data:image/png;base64,AAAA", "image"), "n": 2}, ["n = 1"]),
        ({"messages": [{"role": "user", "content": "no media"}]}, ["exactly one image_url or video_url"]),
        ({"messages": user("data:image/png;base64,AAAA", "image") * 2}, ["exactly one"]),
        ({"messages": user("data:image/png;base64,@@@", "image")}, ["base64"]),
        ({"messages": user("data:text/plain;base64,AAAA", "image")}, ["unsupported media type"]),
        ({"messages": [*user("data:image/png;base64,AAAA", "image"), {"role": "assistant", "content": "x"}]},
         ["last message"]),
    ],
    ids=["malformed", "not-object", "no-messages", "max-tokens", "temperature", "preset", "preset-path", "method",
         "fps+frames", "vitcop-key", "n", "no-media", "two-media", "bad-base64", "mime", "last-turn"],
)
def test_bad_requests_are_400_with_one_line_messages(server, raw, needles):
    expect_error(server.post(raw), 400, *needles)


def test_body_and_media_size_caps_are_413(server, media_root):
    big_body = body(data_url(IMAGE, "image/png"), padding="x" * (2**20 + 10))
    expect_error(server.post(big_body), 413, "body")
    big_media = "data:video/mp4;base64," + base64.b64encode(os.urandom(300_000)).decode()
    err = expect_error(server.post(body(big_media)), 413, "media")
    assert err["code"] == "media_too_large"
    (media_root / "big.mp4").write_bytes(os.urandom(300_000))
    expect_error(server.post(body(str(media_root / "big.mp4"))), 413, "media")


def test_corrupt_video_is_400_and_the_next_request_is_served(server, reference, media_root):
    bad = str(media_root / "corrupt.mp4")
    expect_error(server.post(body(bad)), 400, "cannot read video", "corrupt")
    expect_error(server.post(body(bad, stream=True)), 400, "cannot read video")  # not a 200 stream
    expect_error(server.post(body(str(media_root / "missing.mp4"))), 400, "file not found")
    ok = server.post(body(str(media_root / "clip.mp4")))
    assert ok.status_code == 200
    assert ok.json()["choices"][0]["message"]["content"] == reference(CLIP).answer


def test_unknown_model_is_404(server):
    expect_error(server.post({**body(data_url(IMAGE, "image/png")), "model": "gpt-4o"}), 404, "not served")


# --------------------------------------------------------------------------------------------
# load: 20 clients, a queue of 4
# --------------------------------------------------------------------------------------------


def test_concurrent_clients_get_200_or_429(server, reference, media_root):
    expected = reference(CLIP).answer
    client, model = server.client(), model_id(server)
    start = threading.Barrier(20)

    def one(_):
        start.wait()
        try:
            out = client.chat.completions.create(model=model, messages=user(str(media_root / "clip.mp4")),
                                                 max_tokens=MAX_NEW)
            return 200, out.choices[0].message.content, None
        except openai.APIStatusError as exc:
            return exc.status_code, None, exc.response.headers.get("retry-after")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 429}, statuses
    assert 200 in statuses and 429 in statuses, statuses
    assert statuses.count(200) >= 5  # the queue (4) plus the one generating were all admitted and answered
    assert all(answer == expected for s, answer, _ in results if s == 200)
    assert all(retry is not None and int(retry) >= 1 for s, _, retry in results if s == 429)
    m = server.metrics()
    assert metric(m, "vitcop_queue_depth") == 0 and metric(m, "vitcop_generating") == 0
    assert metric(m, "vitcop_requests_total", endpoint=CHAT, status="429") >= statuses.count(429)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def test_metrics_count_what_happened(server, reference, media_root):
    before = server.metrics()
    ok = server.post(body(str(media_root / "clip.mp4")))
    assert ok.status_code == 200
    assert server.post(b"{oops").status_code == 400
    assert server.post(body(str(media_root / "corrupt.mp4"))).status_code == 400
    assert server.post(body(str(media_root / "clip.mp4")), key="bad").status_code == 401
    after = server.metrics()

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("vitcop_requests_total", endpoint=CHAT, status="200") == 1
    assert delta("vitcop_requests_total", endpoint=CHAT, status="400") == 2
    assert delta("vitcop_requests_total", endpoint=CHAT, status="401") == 1
    assert delta("vitcop_generations_total", outcome="completed") == 1
    assert delta("vitcop_generations_total", outcome="failed") == 1  # the corrupt clip; the bad JSON never queued
    vitcop = ok.json()["vitcop"]
    assert delta("vitcop_generated_tokens_total", outcome="completed") == vitcop["tokens"]["generated"]
    for name in ("vitcop_ttft_seconds_count", "vitcop_prefill_seconds_count", "vitcop_request_latency_seconds_count",
                 "vitcop_queue_wait_seconds_count"):
        assert delta(name) == 1, name
    assert delta("vitcop_prefill_seconds_sum") == pytest.approx(vitcop["timings"]["prefill_s"])
    assert delta("vitcop_visual_tokens_count", stage="before") == 1
    assert delta("vitcop_visual_tokens_sum", stage="before") == vitcop["tokens"]["visual"]
    pruning = vitcop["pruning"]
    after_tokens = pruning["layer_averaged_visual"] if pruning["n_visual"] else vitcop["tokens"]["visual"]
    assert delta("vitcop_visual_tokens_sum", stage="after") == pytest.approx(after_tokens)
    assert metric(after, "vitcop_queue_depth") == 0


# --------------------------------------------------------------------------------------------
# lifecycle: timeouts, disconnects, SIGTERM (a second server: the stored tiny model never stops early)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lifecycle(launched):
    return ready(launched["lifecycle"])


def wait_for(srv: Server, name: str, value: float, **labels) -> dict:
    """Poll /metrics until ``name{labels} == value`` (a bound on failure, not a timing assertion)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = srv.metrics()
        if metric(m, name, **labels) == value:
            return m
        time.sleep(0.1)
    pytest.fail(f"{name}{labels} never reached {value}: {metric(m, name, **labels)}")


def short(media_root: Path, **extra) -> dict:
    return body(str(media_root / "image.png"), "image", **extra)


def test_request_timeout_is_504_and_stops_the_generation(lifecycle, media_root):
    client = lifecycle.client()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=model_id(lifecycle), messages=user(str(media_root / "image.png"), "image"),
                                       max_tokens=LONG)
    assert info.value.status_code == 504
    assert info.value.body["code"] == "timeout"
    m = wait_for(lifecycle, "vitcop_generations_total", 1, outcome="cancelled_timeout")
    assert 0 < metric(m, "vitcop_generated_tokens_total", outcome="cancelled_timeout") < LONG
    # mid-stream: the client gets an error event, the generation stops
    stream = client.chat.completions.create(model=model_id(lifecycle), max_tokens=LONG, stream=True,
                                            messages=user(str(media_root / "image.png"), "image"))
    with pytest.raises(openai.APIError, match="request-timeout"):
        for _ in stream:
            pass
    m = wait_for(lifecycle, "vitcop_generations_total", 2, outcome="cancelled_timeout")
    assert metric(m, "vitcop_generating") == 0


def test_client_disconnect_stops_its_generation(lifecycle, media_root):
    before = lifecycle.metrics()
    stream = lifecycle.client().chat.completions.create(
        model=model_id(lifecycle), messages=user(str(media_root / "image.png"), "image"), max_tokens=LONG, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break  # generating now
    stream.close()  # the client goes away mid-answer
    m = wait_for(lifecycle, "vitcop_generations_total",
                 metric(before, "vitcop_generations_total", outcome="cancelled_disconnect") + 1,
                 outcome="cancelled_disconnect")
    assert metric(m, "vitcop_generated_tokens_total", outcome="cancelled_disconnect") < LONG
    assert metric(m, "vitcop_generating") == 0 and metric(m, "vitcop_queue_depth") == 0
    # the next request starts at once: nothing ahead of it in the queue
    out = lifecycle.post(short(media_root, max_tokens=4), key=None)
    assert out.status_code == 200
    assert out.json()["usage"]["completion_tokens"] == 4
    assert metric(lifecycle.metrics(), "vitcop_generations_total", outcome="cancelled_timeout") == metric(
        m, "vitcop_generations_total", outcome="cancelled_timeout")  # it was the disconnect, not the timeout


def test_sigterm_cancels_in_flight_work_and_exits_0(lifecycle, media_root):
    outcome = {}

    def client():
        stream = lifecycle.client().chat.completions.create(
            model=model_id(lifecycle), messages=user(str(media_root / "image.png"), "image"), max_tokens=LONG,
            stream=True)
        try:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    outcome["started"] = True
            outcome["ended"] = "eof"
        except Exception as exc:  # noqa: BLE001 - what the client saw is the point
            outcome["ended"] = type(exc).__name__

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 120
    while "started" not in outcome and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert outcome.get("started"), outcome
    lifecycle.proc.send_signal(signal.SIGTERM)
    assert lifecycle.proc.wait(120) == 0, lifecycle.log.read_text()
    thread.join(60)
    assert not thread.is_alive()
    assert outcome["ended"] in ("APIError", "eof", "APIConnectionError", "RemoteProtocolError"), outcome
    assert "Traceback" not in lifecycle.log.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(lifecycle.base + "/health")


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="this platform has no SIGHUP")
def test_sighup_stops_a_serving_server_with_status_0(launched):
    """A closed terminal (SIGHUP) stops the server like SIGTERM; by default it would kill it silently."""
    idle = ready(launched["idle"])
    idle.proc.send_signal(signal.SIGHUP)
    assert idle.proc.wait(120) == 0, idle.log.read_text()
    assert "Traceback" not in idle.log.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(idle.base + "/health")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_model_loads_stops_with_status_0(tmp_path, sig):
    """The server is provably mid-load: its ``config.json`` is a FIFO it blocks reading until we signal."""
    model = tmp_path / "model"
    model.mkdir()
    fifo = model / "config.json"
    os.mkfifo(fifo)
    proc, log = launch(model, tmp_path / "serve.log")
    writer = None
    try:
        deadline = time.monotonic() + 120
        while writer is None and proc.poll() is None and time.monotonic() < deadline:
            try:  # succeeds only once the server has opened the FIFO for reading (inside the load)
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
        assert writer is not None, log.read_text()
        proc.send_signal(sig)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if writer is not None:
            os.close(writer)
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "Traceback" not in text
    why = "SIGTERM" if sig == signal.SIGTERM else "Ctrl-C"
    assert f"stopped ({why}) before the model finished loading" in text, text
