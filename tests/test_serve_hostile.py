"""``vitcop serve`` against hostile and malformed requests: no request costs the other clients time or
the server memory beyond its declared size, and every bad request is a 4xx with a one-line reason.

Findings (numbers as in the issue) and their tests:

1. stop strings: matching is incremental (work counted per piece, not timed), stop strings are capped,
   and a streamed request with long stop strings leaves ``/health`` answering —
   ``test_answer_text_work_per_feed_is_bounded_by_the_new_text_and_the_longest_stop``,
   ``test_stop_strings_criterion_decodes_only_the_new_tokens``, ``test_stop_string_caps_are_400``,
   ``test_long_stop_strings_stream_the_same_answer_while_health_answers``;
2. malformed requests: ``test_malformed_request_corpus_is_4xx_with_a_clean_log`` (one server, 60+ cases), and
   500 stays for bugs, logged once: ``test_a_bug_is_a_500_logged_once_and_counted``;
3. a client that drops mid-body: ``test_a_client_that_drops_mid_body_is_a_499_not_a_500``;
4. ``data:`` URL memory: ``test_data_url_with_whitespace_decodes_in_bounded_memory`` (a child's peak RSS);
7. error wording: ``test_errors_name_api_fields_and_keep_server_paths_private``.

No wall-clock assertions: timings are measured by ``benchmarks/serve_hostile.py``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import sys
import threading
from pathlib import Path

import httpx
import pytest
from child_memory import run_measured
from PIL import Image
from test_serve import CHAT, SAMPLES, launch, metric, ready

from vitcop_cli.errors import InputError
from vitcop_cli.serve.config import ServeConfig
from vitcop_cli.serve.errors import ApiError, from_library
from vitcop_cli.serve.media import resolve_media
from vitcop_cli.serve.request import MAX_STOP_CHARS, MAX_STOPS, parse_chat_request
from vitcop_cli.serve.stopping import StopStrings
from vitcop_cli.serve.text_stream import AnswerText, final_answer

IMAGE = SAMPLES / "scene.png"
IMG_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


# --------------------------------------------------------------------------------------------
# 1. stop strings: incremental matching, bounded work, capped length
# --------------------------------------------------------------------------------------------


def _feed_all(text: AnswerText, pieces: list[str]) -> str:
    return "".join(text.feed(p) for p in pieces) + text.finish()


def test_incremental_answer_text_equals_final_answer_with_long_stops_and_pieces():
    rng = random.Random(1)
    alphabet = "ab \n"
    for _ in range(3000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(0, 4))]
        cuts = sorted(rng.randint(0, len(raw)) for _ in range(rng.randint(0, 12)))
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
        text = AnswerText(stops)
        assert (_feed_all(text, pieces), text.stopped) == final_answer(raw, stops), (raw, stops, cuts)
        assert text.text == final_answer(raw, stops)[0]


def test_answer_text_work_per_feed_is_bounded_by_the_new_text_and_the_longest_stop():
    """Four 60,000-character stop strings that the text keeps almost matching (the worst case for the old
    "try every prefix length" scan): each feed costs at most ``2 * len(piece) + longest`` automaton steps
    per stop string, the whole stream at most twice its length per stop string, and the text held
    back stays shorter than the longest stop string."""
    longest = 60_000
    stops = ["a" * (longest - 1) + tail for tail in "bcde"]
    text = AnswerText(stops)
    pieces = ["a" * 7] * 20_000  # 140,000 characters: many prefixes of every stop string, never a whole one
    for piece in pieces:
        before = text.steps
        text.feed(piece)
        assert text.steps - before <= len(stops) * (2 * len(piece) + longest)
        assert len(text._held) < longest
    total = sum(map(len, pieces))
    assert text.steps <= len(stops) * 2 * total  # amortized: independent of the stop strings' length
    text.finish()
    assert not text.stopped and text.text == "a" * total
    # the same text without stop strings: no matching work at all, the same answer
    plain = AnswerText([])
    assert _feed_all(plain, pieces) == "a" * total and plain.steps == 0


class _CharTokenizer:
    """Token id = a character's code point; counts how many ids it was asked to decode."""

    def __init__(self):
        self.decoded = []

    def decode(self, ids, skip_special_tokens=True):
        self.decoded.append(len(ids))
        return "".join(map(chr, ids))


def test_stop_strings_criterion_decodes_only_the_new_tokens():
    import torch

    tokenizer, prompt = _CharTokenizer(), [0] * 5
    answer = "x" * 3000 + "THE END" + "y" * 10
    stops = StopStrings(tokenizer, len(prompt), ["no such", "END"])
    ids, stopped_at = list(prompt), None
    for i, c in enumerate(answer):
        ids.append(ord(c))
        tokenizer.decoded.clear()
        if bool(stops(torch.tensor([ids]), None)[0]):
            stopped_at = i
            break
        assert max(tokenizer.decoded) <= 2  # the new token and the one before it, not the whole answer
    assert answer[: stopped_at + 1].endswith("THE END")  # stopped on the token that completed the stop string


def test_stop_string_caps_are_400():
    body = {"messages": [{"role": "user", "content": [IMG_PART]}]}
    cfg = ServeConfig(model="m")
    assert parse_chat_request({**body, "stop": ["x" * MAX_STOP_CHARS] * MAX_STOPS}, cfg, {"m"}).stop
    for stop in (["x" * (MAX_STOP_CHARS + 1)], "y" * 60_000, ["a"] * (MAX_STOPS + 1)):
        with pytest.raises(ApiError) as info:
            parse_chat_request({**body, "stop": stop}, cfg, {"m"})
        assert info.value.status == 400 and info.value.param == "stop"
        assert len(info.value.message) < 200


# --------------------------------------------------------------------------------------------
# 4. data: URLs: streamed decoding, memory bounded by a chunk, not by the payload's whitespace
# --------------------------------------------------------------------------------------------


def test_data_urls_decode_in_chunks_with_whitespace_and_strict_base64(tmp_path, monkeypatch):
    import vitcop_cli.serve.media as media_module

    monkeypatch.setattr(media_module, "DATA_CHUNK", 7)  # chunks that split groups, padding and whitespace
    payload = IMAGE.read_bytes()
    encoded = base64.b64encode(payload).decode()
    spaced = "\n".join(encoded[i:i + 3] for i in range(0, len(encoded), 3)) + " \r\n"
    media = resolve_media("data:image/png;base64," + spaced, ServeConfig(model="m"), tmp_path)
    assert media.path.read_bytes() == payload
    media.cleanup()
    for bad in ("QUJD=QUJD", "QUJ", "QUJD\u00e9", "", "QU=D", "QUJD====QUJD"):
        with pytest.raises(ApiError) as info:
            resolve_media("data:image/png;base64," + bad, ServeConfig(model="m"), tmp_path)
        assert info.value.status == 400 and "base64" in info.value.message, bad
    with pytest.raises(ApiError) as info:
        resolve_media("data:image/png;base64," + spaced, ServeConfig(model="m", max_media_bytes=500), tmp_path)
    assert info.value.status == 413
    assert list(tmp_path.iterdir()) == []  # partial files of refused payloads are removed


_DECODE_CHILD = """
import sys, tempfile
from pathlib import Path
from vitcop_cli.serve.config import ServeConfig
from vitcop_cli.serve.media import resolve_media
size, decode = int(sys.argv[1]), sys.argv[2] == "decode"
url = "data:video/mp4;base64," + "QU " * (size // 3)  # whitespace every two characters
if decode:
    with tempfile.TemporaryDirectory() as tmp:
        resolve_media(url, ServeConfig(model="m", max_media_bytes=2**30), Path(tmp)).cleanup()
"""


def test_data_url_with_whitespace_decodes_in_bounded_memory(tmp_path):
    """Finding 4: a 60 MB payload with whitespace every two characters; the old code's copy without
    whitespace (a list of 2-character strings) raised peak RSS by ~1.75 GB. Measured: the peak RSS of a
    child that decodes it minus that of one that only builds the URL."""
    size = 60_000_000
    peaks = {}
    for mode in ("build", "decode"):
        code, peaks[mode] = run_measured([sys.executable, "-c", _DECODE_CHILD, str(size), mode], tmp_path / mode,
                                         cwd=Path(__file__).resolve().parent.parent)
        assert code == 0
    assert peaks["decode"] - peaks["build"] < 300 * 2**20, peaks


# --------------------------------------------------------------------------------------------
# 2 and 7 without a server: boundary checks and wording
# --------------------------------------------------------------------------------------------


def test_errors_name_api_fields_and_keep_server_paths_private(tmp_path):
    err = from_library(InputError("--max-new-tokens 900,000 does not fit the model's 32,768 positions; use fewer "
                                  "frames or a lower --max-pixels; the server's --max-frames stays"))
    assert err.message.startswith("max_tokens 900,000") and "vitcop.max_pixels" in err.message
    assert "--max-frames" in err.message  # a server option keeps its name
    with pytest.raises(ApiError) as info:
        parse_chat_request({"messages": [{"role": "user", "content": [IMG_PART]}], "max_tokens": 1e308},
                           ServeConfig(model="m"), {"m"})
    assert info.value.param == "max_tokens" and "max_tokens" in info.value.message
    assert "0" * 20 not in info.value.message and "--max-new-tokens" not in info.value.message


def test_a_bug_is_a_500_logged_once_and_counted(monkeypatch, caplog):
    """500 stays for real bugs: one log record with the traceback (not a second one from the server)."""
    import logging

    from starlette.testclient import TestClient

    import vitcop_cli.serve.app as app_module

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app_module, "parse_chat_request", broken)
    app = app_module.create_app(None, ServeConfig(model="m"))
    with caplog.at_level(logging.ERROR):
        response = TestClient(app, raise_server_exceptions=False).post(CHAT, content=b"{}")
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
    assert "RuntimeError" in response.json()["error"]["message"] and "a bug" not in response.text
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == ["unexpected error"]
    assert b'status="500"' in app.state.metrics.render()


# --------------------------------------------------------------------------------------------
# a real server: the malformed-request corpus, a dropped body, long stop strings
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile-media")
    (root / "image.png").write_bytes(IMAGE.read_bytes())
    Image.new("RGB", (402, 2), (200, 10, 10)).save(root / "wide.png")  # aspect ratio 201:1
    Image.new("RGB", (2, 2000), (10, 200, 10)).save(root / "tall.png")  # 1:1000
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (root / "text.png").write_text("not an image")
    (root / "folder.mp4").mkdir()
    return root


@pytest.fixture(scope="module")
def hostile(tiny_models, hostile_root, tmp_path_factory):
    """The stored tiny model (never emits EOS), a 2 MiB body cap, one media root, no API key."""
    log = tmp_path_factory.mktemp("hostile") / "serve.log"
    server = ready(launch(tiny_models["qwen2_vl"], log, "--frames", 2, "--max-new-tokens", 4,
                          "--allowed-media-root", hostile_root, "--max-body-mb", 2, "--max-media-mb", 1))
    yield server
    server.stop()


def _user(url: str, kind: str = "image", text: str = "What is it?") -> list[dict]:
    return [{"role": "user", "content": [{"type": f"{kind}_url", f"{kind}_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


def _corpus(root: Path) -> dict[str, object]:
    ok = str(root / "image.png")
    good = {"messages": _user(ok), "max_tokens": 2}
    corrupt_clip = "data:video/mp4;base64," + base64.b64encode(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 600).decode()
    return {
        # body
        "not-json": b"{not json",
        "not-object": b"[1, 2]",
        "a-string": b'"hello"',
        "empty": b"",
        "not-utf8": b"\xff\xfe\x00garbage",
        "deep-nesting": b"[" * 200_000 + b"]" * 200_000,
        "huge-int-literal": b'{"messages": [], "max_tokens": ' + b"9" * 5000 + b"}",
        "nan-literal": json.dumps(good)[:-1].encode() + b', "temperature": NaN}',
        "over-body-cap": {**good, "padding": "x" * (3 * 2**20)},
        # fields
        "model-list": {**good, "model": ["a"]},
        "model-object": {**good, "model": {"id": "x"}},
        "model-other": {**good, "model": "gpt-4o"},
        "messages-object": {"messages": {"role": "user"}},
        "role-list": {"messages": [{"role": ["user"], "content": "x"}]},
        "role-object": {"messages": [{"role": {"u": 1}, "content": "x"}]},
        "role-number": {"messages": [{"role": 3, "content": "x"}]},
        "content-number": {"messages": [{"role": "user", "content": 5}]},
        "part-string": {"messages": [{"role": "user", "content": ["text"]}]},
        "part-type-list": {"messages": [{"role": "user", "content": [{"type": ["text"]}]}]},
        "url-number": {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}]},
        "surrogate-text": {"messages": _user(ok, text="bad \ud800 text")},
        "surrogate-url": {"messages": _user(ok + "\udc80")},
        "surrogate-key": {**good, "vitcop": {"\ud801": 1}},
        "vitcop-list": {**good, "vitcop": [1]},
        "preset-list": {**good, "vitcop": {"preset": ["1_3"]}},
        "method-object": {**good, "vitcop": {"method": {"x": 1}}},
        "method-long": {**good, "vitcop": {"method": "m" * 100_000}},
        "stream-string": {**good, "stream": "yes"},
        "stop-too-many": {**good, "stop": ["a"] * 5},
        "stop-too-long": {**good, "stop": ["z" * 60_000] * 4},
        "stop-number": {**good, "stop": [1]},
        "n-two": {**good, "n": 2},
        "stream-options-alone": {**good, "stream_options": {"include_usage": True}},
        "response-format": {**good, "response_format": {"type": "json_schema"}},
        # media
        "nul-in-path": {"messages": _user(str(root / "ima\x00ge.png"))},
        "name-too-long": {"messages": _user(str(root / ("n" * 300 + ".png")))},
        "path-too-long": {"messages": _user(str(root) + "/a" * 3000)},
        "file-url-malformed": {"messages": _user("file://[::1/x.png")},
        "file-url-remote": {"messages": _user("file://evil.example/etc/passwd")},
        "relative-path": {"messages": _user("image.png")},
        "other-scheme": {"messages": _user("gopher://x/y.png")},
        "outside-root": {"messages": _user(str(IMAGE))},
        "aspect-wide": {"messages": _user(str(root / "wide.png"))},
        "aspect-tall": {"messages": _user(str(root / "tall.png"))},
        "not-an-image": {"messages": _user(str(root / "text.png"))},
        "a-folder": {"messages": _user(str(root / "folder.mp4"), "video")},
        "corrupt-video": {"messages": _user(str(root / "corrupt.mp4"), "video")},
        "corrupt-data-url": {"messages": _user(corrupt_clip, "video")},
        "data-no-comma": {"messages": _user("data:image/png;base64" + "A" * 1000)},
        "data-not-base64": {"messages": _user("data:image/png;base64,@@@@")},
        "data-non-ascii": {"messages": _user("data:image/png;base64,QUJD\u00e9")},
        "data-empty": {"messages": _user("data:image/png;base64,")},
        "data-padding-inside": {"messages": _user("data:image/png;base64,QU==QUJD")},
        "data-unknown-mime": {"messages": _user("data:text/html;base64,QUJD")},
        "data-over-media-cap": {"messages": _user("data:image/png;base64," + "QUJD " * 400_000)},
        # sampling
        "temperature-tiny": {**good, "temperature": 1e-300},
        "temperature-negative": {**good, "temperature": -1},
        "temperature-string": {**good, "temperature": "hot"},
        "top-p-zero": {**good, "temperature": 1, "top_p": 0},
        "top-p-big": {**good, "temperature": 1, "top_p": 2},
        "max-tokens-1e308": {**good, "max_tokens": 1e308},
        "max-tokens-zero": {**good, "max_tokens": 0},
        "max-tokens-fraction": {**good, "max_tokens": 1.5},
        "max-tokens-past-context": {**good, "max_tokens": 1_000_000},
        "seed-negative": {**good, "seed": -1},
        "seed-huge": {**good, "seed": 2**64},
        "frames-huge": {**good, "vitcop": {"frames": 1e18}},
        "fps-negative": {**good, "vitcop": {"fps": -1}},
        "max-pixels-huge": {**good, "vitcop": {"max_pixels": 1e300}},
    }


def test_malformed_request_corpus_is_4xx_with_a_clean_log(hostile, hostile_root):
    corpus = _corpus(hostile_root)
    assert len(corpus) >= 30
    before = hostile.metrics()
    statuses = {}
    for name, body in corpus.items():
        response = hostile.post(body, key=None)
        statuses[name] = response.status_code
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:300])
        message = response.json()["error"]["message"]
        assert "\n" not in message and len(message) < 600, (name, message[:300])
        assert "vitcop-serve-" not in message, (name, message)  # the server's private temporary folder
        assert not any(w.isdigit() and len(w) > 30 for w in message.replace(",", " ").split()), (name, message)
    assert statuses["model-other"] == 404 and statuses["over-body-cap"] == 413
    assert statuses["data-over-media-cap"] == 413
    ok = hostile.post({"messages": _user(str(hostile_root / "image.png")), "max_tokens": 2}, key=None)
    assert ok.status_code == 200  # the server kept serving
    after = hostile.metrics()
    assert metric(after, "vitcop_requests_total", endpoint=CHAT, status="500") == metric(
        before, "vitcop_requests_total", endpoint=CHAT, status="500") == 0
    log = hostile.log.read_text()
    assert "Traceback" not in log and "unexpected error" not in log and "Exception in ASGI" not in log, log[-3000:]


def test_api_errors_name_the_field(hostile, hostile_root):
    def error(body):
        response = hostile.post(body, key=None)
        assert response.status_code == 400, response.text
        return response.json()["error"]

    good = {"messages": _user(str(hostile_root / "image.png"))}
    past = error({**good, "max_tokens": 1_000_000})  # under the request cap, past the model's context
    assert "max_tokens" in past["message"] and "--max-new-tokens" not in past["message"]
    huge = error({**good, "max_tokens": 1e308})
    assert huge["param"] == "max_tokens" and "309-digit" in huge["message"]
    data = error({"messages": _user("data:video/mp4;base64," + base64.b64encode(b"\x00" * 300).decode(), "video")})
    assert "data:video/mp4" in data["message"] and "vitcop-serve-" not in data["message"]
    assert error({**good, "model": [1]})["param"] == "model"
    assert error({**good, "temperature": 1e-300})["param"] == "temperature"


def test_a_client_that_drops_mid_body_is_a_499_not_a_500(hostile):
    """Finding 3: headers announcing 1,000 bytes, 100 of them, then the connection closes."""
    before = hostile.metrics()
    host, port = hostile.base.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                         "Content-Length: 1000\r\n\r\n".encode() + b'{"messages": ' + b" " * 87)
    deadline = 200
    while deadline and metric(hostile.metrics(), "vitcop_requests_total", endpoint=CHAT, status="499") - metric(
            before, "vitcop_requests_total", endpoint=CHAT, status="499") < 3:
        threading.Event().wait(0.1)  # a bound on failure, not a timing assertion
        deadline -= 1
    after = hostile.metrics()
    assert metric(after, "vitcop_requests_total", endpoint=CHAT, status="499") - metric(
        before, "vitcop_requests_total", endpoint=CHAT, status="499") == 3
    assert metric(after, "vitcop_requests_total", endpoint=CHAT, status="500") == 0
    log = hostile.log.read_text()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


def test_long_stop_strings_stream_the_same_answer_while_health_answers(hostile, hostile_root):
    """Finding 1 end to end: four stop strings at the cap that never match leave the streamed answer as it
    is without them, and /health keeps answering while it streams (timings: benchmarks/serve_hostile.py)."""
    client = hostile.client(key=None)
    messages = _user(str(hostile_root / "image.png"))
    model = client.models.list().data[0].id

    def streamed(**extra) -> tuple[str, str]:
        chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=40, stream=True,
                                                     **extra))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)

    plain = streamed()
    health, done = [], threading.Event()

    def poll():
        while not done.is_set():
            health.append(httpx.get(hostile.base + "/health", timeout=60).status_code)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        stops = ["\u2603" * (MAX_STOP_CHARS - 1) + tail for tail in "abcd"]  # never in the answer
        assert streamed(stop=stops) == plain
    finally:
        done.set()
        poller.join(60)
    assert plain[1] == "length" and health and set(health) == {200}
