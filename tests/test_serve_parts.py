"""The parts of ``vitcop serve`` that need no server process: answer text, media policy, request
parsing, and the library's multi-turn ``Session.prepare_chat``. (The server itself: test_serve.py.)"""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest
import torch

from vitcop_cli.serve.config import ServeConfig
from vitcop_cli.serve.errors import ApiError
from vitcop_cli.serve.media import resolve_media
from vitcop_cli.serve.request import parse_chat_request, with_visual_kind
from vitcop_cli.serve.text_stream import AnswerText, final_answer
from vitcop_cli.errors import InputError
from vitcop_cli.media.video import load_visual

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

# --------------------------------------------------------------------------------------------
# AnswerText: streamed pieces concatenate to exactly the non-streamed answer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, stops, answer, stopped",
    [
        ("  Hello world  ", [], "Hello world", False),
        ("Hello world. Bye", ["."], "Hello world", True),
        ("Hello\n\nworld", ["\n\n"], "Hello", True),
        ("\nHello", ["\n"], "", True),  # the stop applies to the raw text, before stripping
        ("ab ab", ["b a", "zz"], "a", True),
        ("no stop here", ["zz"], "no stop here", False),
    ],
)
def test_final_answer(raw, stops, answer, stopped):
    assert final_answer(raw, stops) == (answer, stopped)


def _stream(raw: str, stops: list[str], cuts: list[int]) -> tuple[str, list[str], bool]:
    text, released, last = AnswerText(stops), [], 0
    for cut in sorted(cuts) + [len(raw)]:
        released.append(text.feed(raw[last:cut]))
        last = cut
    released.append(text.finish())
    assert "".join(released) == text.text
    return text.text, released, text.stopped


def test_streamed_text_equals_final_answer_for_every_split():
    rng = random.Random(0)
    alphabet = "ab \n."
    for _ in range(2000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        stops = [s for s in ("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(0, 2)))]
        cuts = [rng.randint(0, len(raw)) for _ in range(rng.randint(0, 5))]
        got, _, stopped = _stream(raw, stops, cuts)
        assert (got, stopped) == final_answer(raw, stops), (raw, stops, cuts)


def test_held_back_text_is_released_only_when_decided():
    text = AnswerText(["STOP"])
    assert text.feed("Hello ") == "Hello"  # trailing blank held
    assert text.feed("ST") == ""  # could be the start of STOP
    assert text.feed("ART now") == " START now"
    assert text.feed(" then STO") == " then"
    assert text.feed("P and more") == "" and text.stopped
    assert text.feed("ignored") == "" and text.finish() == ""
    assert text.text == "Hello START now then"


# --------------------------------------------------------------------------------------------
# media policy
# --------------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    (r / "clip.mp4").write_bytes(b"x" * 10)
    (r / "out.mp4").symlink_to(tmp_path / "secret.mp4")
    (tmp_path / "secret.mp4").write_bytes(b"s")
    (r / "dirlink").symlink_to(tmp_path)
    return r


def config(root: Path | None = None, **kw) -> ServeConfig:
    return ServeConfig(model="m", allowed_media_roots=(root,) if root else (), **kw)


def refused(url: str, cfg: ServeConfig, tmp_path: Path, status: int = 400) -> str:
    with pytest.raises(ApiError) as info:
        resolve_media(url, cfg, tmp_path)
    assert info.value.status == status
    return info.value.message


def test_local_paths_need_an_allowed_root_and_stay_inside_it(root, tmp_path):
    assert "--allowed-media-root" in refused(str(root / "clip.mp4"), config(), tmp_path)
    cfg = config(root)
    media = resolve_media(str(root / "clip.mp4"), cfg, tmp_path)
    assert media.path == (root / "clip.mp4").resolve() and not media.temporary
    assert resolve_media(f"file://{root}/clip.mp4", cfg, tmp_path).path == media.path
    assert resolve_media(f"file://localhost{root}/clip%2Emp4", cfg, tmp_path).path == media.path
    for bad in (str(root / "out.mp4"), str(root / "dirlink" / "secret.mp4"), str(root / ".." / "secret.mp4"),
                f"file://{tmp_path}/secret.mp4", "/etc/passwd"):
        assert "outside" in refused(bad, cfg, tmp_path), bad
    assert "remote host" in refused("file://evil.example/etc/passwd", cfg, tmp_path)
    assert "not absolute" in refused("clip.mp4", cfg, tmp_path)
    assert "scheme" in refused("gopher://x/y", cfg, tmp_path)
    assert "--allow-remote-media" in refused("http://127.0.0.1/x.mp4", cfg, tmp_path)
    remote = resolve_media("https://example.com/x.mp4", config(allow_remote_media=True), tmp_path)
    assert remote.url == "https://example.com/x.mp4" and remote.path is None
    assert "media" in refused(str(root / "clip.mp4"), config(root, max_media_bytes=5), tmp_path, 413)


def test_data_urls_are_decoded_into_private_files(tmp_path):
    payload = (SAMPLES / "scene.png").read_bytes()
    url = "data:image/png;base64," + base64.b64encode(payload).decode()
    media = resolve_media(url, config(), tmp_path)
    assert media.temporary and media.path.suffix == ".png" and media.path.parent == tmp_path
    assert media.path.read_bytes() == payload and media.source == "data:image/png"
    assert load_visual(media.path).kind == "image"
    media.cleanup()
    assert not media.path.exists()
    assert "base64" in refused("data:image/png,abc", config(), tmp_path)
    assert "not valid base64" in refused("data:image/png;base64,***", config(), tmp_path)
    assert "unsupported media type" in refused("data:application/pdf;base64,AAAA", config(), tmp_path)
    assert "media" in refused(url, config(max_media_bytes=100), tmp_path, 413)
    assert list(tmp_path.iterdir()) == []  # nothing left behind by refusals


# --------------------------------------------------------------------------------------------
# request parsing
# --------------------------------------------------------------------------------------------

IMG = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def parse(body: dict, **cfg):
    return parse_chat_request(body, ServeConfig(model="m", **cfg), {"m"})


def test_request_fields_map_to_library_arguments():
    req = parse({
        "model": "m",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Look:"}, IMG]},
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": "Colour?"},
        ],
        "max_completion_tokens": 9, "max_tokens": 100, "temperature": 0.7, "top_p": 0.5, "seed": 3, "stop": "\n",
        "stream": True, "stream_options": {"include_usage": True},
        "vitcop": {"preset": "1_9", "method": "fastv", "fps": 1.0, "max_pixels": 50000},
    }, frames=4)
    assert req.max_tokens == 9 and req.temperature == 0.7 and req.top_p == 0.5 and req.seed == 3
    assert req.stop == ["\n"] and req.stream and req.include_usage
    assert (req.preset, req.method, req.fps, req.frames, req.max_pixels) == ("1_9", "fastv", 1.0, None, 50000)
    assert req.media_url == "data:image/png;base64,AAAA"
    assert with_visual_kind(req.messages, "image") == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {"role": "user", "content": [{"type": "text", "text": "Colour?"}]},
    ]


def test_request_defaults_come_from_the_server():
    req = parse({"messages": [{"role": "user", "content": [IMG]}], "top_p": 0.3},
                preset="2_9", method="uniform", frames=6, max_new_tokens=17)
    assert (req.preset, req.method, req.frames, req.fps, req.max_tokens) == ("2_9", "uniform", 6, None, 17)
    assert req.temperature == 0.0 and req.top_p is None  # greedy: top_p does not apply


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"model": "other", "messages": [{"role": "user", "content": [IMG]}]}, 404, "not served"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 400, "role 'tool'"),
        ({"messages": [{"role": "assistant", "content": [IMG]}, {"role": "user", "content": "x"}]}, 400,
         "only allowed in user"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, 400, "input_audio"),
        ({"messages": [{"role": "user", "content": [IMG]}], "stream_options": {"include_usage": True}}, 400,
         "only allowed with stream"),
        ({"messages": [{"role": "user", "content": [IMG]}], "stop": ["a"] * 5}, 400, "stop"),
        ({"messages": [{"role": "user", "content": [IMG]}], "seed": -1}, 400, "seed"),
        ({"messages": [{"role": "user", "content": [IMG]}], "stream": "yes"}, 400, "stream"),
        ({"messages": [{"role": "user", "content": [IMG]}], "tools": [{"type": "function"}]}, 400, "tools"),
        ({"messages": [{"role": "user", "content": [IMG]}], "vitcop": {"frames": 0}}, 400, "vitcop.frames"),
        ({"messages": [{"role": "user", "content": [IMG]}], "vitcop": {"max_pixels": 10}}, 400, "--min-pixels"),
    ],
)
def test_request_refusals(body, status, needle):
    with pytest.raises(ApiError) as info:
        parse(body, min_pixels=100)
    assert info.value.status == status and needle in info.value.message


def test_request_max_pixels_cannot_exceed_the_servers_cap():
    body = {"messages": [{"role": "user", "content": [IMG]}], "vitcop": {"max_pixels": 50001}}
    with pytest.raises(ApiError) as info:
        parse(body, max_pixels=50000)
    err = info.value
    assert err.status == 400 and err.param == "vitcop" and "\n" not in err.message
    assert "50001" in err.message and "50000" in err.message and "--max-pixels" in err.message
    assert err.body()["error"]["type"] == "invalid_request_error"
    # at or below the cap: the request's own value; without a server cap: anything >= 1, as before
    assert parse({**body, "vitcop": {"max_pixels": 50000}}, max_pixels=50000).max_pixels == 50000
    assert parse({**body, "vitcop": {"max_pixels": 1000}}, max_pixels=50000).max_pixels == 1000
    assert parse(body).max_pixels == 50001
    assert parse({**body, "vitcop": {}}, max_pixels=50000).max_pixels == 50000  # the server's default


def test_a_server_preset_file_is_allowed_but_no_other_file(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text((Path(__file__).resolve().parent.parent / "presets" / "1_9.yaml").read_text())
    body = {"messages": [{"role": "user", "content": [IMG]}], "vitcop": {"preset": str(preset)}}
    assert parse(body, preset=str(preset)).preset == str(preset)
    with pytest.raises(ApiError, match="cannot name a preset file"):
        parse(body)


# --------------------------------------------------------------------------------------------
# Session.prepare_chat (library)
# --------------------------------------------------------------------------------------------


def test_prepare_chat_of_one_turn_equals_prepare(sessions, family):
    session = sessions[family]
    visual = load_visual(SAMPLES / "shapes.mp4", frames=4)
    ref = session.prepare(visual, "What happens?", system="Be brief.")
    got = session.prepare_chat(visual, [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]},
    ])
    assert got.question == "What happens?"
    assert set(got.inputs) == set(ref.inputs)
    for key in ref.inputs:
        assert torch.equal(got.inputs[key], ref.inputs[key]), key


def test_prepare_chat_multi_turn_and_refusals(sessions):
    session = sessions["qwen2_vl"]
    image = load_visual(SAMPLES / "scene.png")
    turns = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A scene."}]},
        {"role": "user", "content": [{"type": "text", "text": "Colours?"}]},
    ]
    one = session.prepare(image, "What is it?")
    multi = session.prepare_chat(image, turns)
    assert multi.question == "Colours?"
    n = one.inputs["input_ids"].shape[1]
    assert multi.inputs["input_ids"].shape[1] > n
    assert torch.equal(multi.inputs["pixel_values"], one.inputs["pixel_values"])
    result = session.generate(multi, preset="1_3", max_new_tokens=3)
    assert result.tokens.prompt == multi.inputs["input_ids"].shape[1] and result.question == "Colours?"
    with pytest.raises(InputError, match="exactly one image"):
        session.prepare_chat(image, [{"role": "user", "content": [{"type": "text", "text": "x"}]}])
    with pytest.raises(InputError, match="exactly one image"):
        session.prepare_chat(image, [{"role": "user", "content": [{"type": "video"}]}])
    with pytest.raises(InputError, match="end with a user"):
        session.prepare_chat(image, turns[:2])


def test_generate_stops_when_a_stopping_criterion_fires(sessions):
    from vitcop_cli.serve.stopping import CancelFlag
    import threading

    session = sessions["qwen2_vl"]
    prepared = session.prepare(load_visual(SAMPLES / "scene.png"), "What?")
    flag = threading.Event()
    seen = []

    def on_text(piece):
        seen.append(piece)
        flag.set()  # cancel as soon as the first text arrives

    result = session.generate(prepared, preset="none", max_new_tokens=20, on_text=on_text,
                              stopping_criteria=[CancelFlag(flag)])
    assert seen and 1 <= result.tokens.generated < 20
    full = session.generate(prepared, preset="none", max_new_tokens=20, stopping_criteria=[CancelFlag(threading.Event())])
    assert full.tokens.generated == 20  # (the stored tiny model never emits EOS)


# --------------------------------------------------------------------------------------------
# remote media (with --allow-remote-media): a private download, size-capped, deleted after use
# (the local targets are on 127.0.0.1, hence --allow-private-media-hosts; the guard: test_netguard.py)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def http_samples():
    """A local HTTP server over samples/ (nothing leaves the machine)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SAMPLES))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_remote_media_is_downloaded_privately_and_capped(http_samples, tmp_path):
    from vitcop_cli.serve.media import local_file

    cfg = config(allow_remote_media=True, allow_private_media_hosts=True)
    media = resolve_media(f"{http_samples}/shapes.mp4", cfg, tmp_path)
    path = local_file(media, cfg, tmp_path)
    assert path.read_bytes() == (SAMPLES / "shapes.mp4").read_bytes()
    assert path.is_relative_to(tmp_path)  # not the CLI's shared download cache
    assert load_visual(path, frames=4).kind == "video"
    media.cleanup()
    assert list(tmp_path.iterdir()) == []
    small = config(allow_remote_media=True, allow_private_media_hosts=True, max_media_bytes=1000)
    with pytest.raises(ApiError) as info:
        local_file(resolve_media(f"{http_samples}/shapes.mp4", small, tmp_path), small, tmp_path)
    assert info.value.status == 413
    with pytest.raises(InputError, match="404"):
        local_file(resolve_media(f"{http_samples}/missing.mp4", cfg, tmp_path), cfg, tmp_path)


def test_remote_hosts_decidable_without_dns_are_refused_before_queuing(tmp_path, monkeypatch):
    import socket

    def no_dns(host, *args, flags=0, **kwargs):  # resolve_media runs on the request path: no DNS look-up
        if not flags & socket.AI_NUMERICHOST:
            raise AssertionError(f"DNS look-up of {host!r} before queuing")
        return real(host, *args, flags=flags, **kwargs)
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    cfg = config(allow_remote_media=True)
    with pytest.raises(ApiError) as info:
        resolve_media("http://169.254.169.254/latest/meta-data/", cfg, tmp_path)
    assert info.value.code == "media_host_refused" and "link-local" in info.value.message
    listed = config(allow_remote_media=True, allowed_media_domains=("*.example",))
    with pytest.raises(ApiError, match="--allowed-media-domains"):
        resolve_media("https://example.org/x.mp4", listed, tmp_path)
    assert resolve_media("https://cdn.example/x.mp4", listed, tmp_path).url == "https://cdn.example/x.mp4"
    assert resolve_media("https://name.test/x.mp4", cfg, tmp_path).url  # a name: checked when the worker connects


def test_a_remote_body_over_the_cap_without_content_length_is_413(tmp_path):
    """The streaming size check (no Content-Length to refuse up front) is a 413 too, by type."""
    import http.server
    import threading

    from vitcop_cli.media.download import DownloadTooLarge, fetch
    from vitcop_cli.serve.media import local_file

    class NoLength(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # body delimited by closing the connection

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.end_headers()
            self.wfile.write(b"\0" * 5000)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoLength)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/clip.mp4"
        small = config(allow_remote_media=True, allow_private_media_hosts=True, max_media_bytes=1000)
        with pytest.raises(ApiError) as info:
            local_file(resolve_media(url, small, tmp_path), small, tmp_path)
        assert info.value.status == 413 and info.value.code == "media_too_large"
        assert "1000 bytes" in info.value.message and "\n" not in info.value.message
        with pytest.raises(DownloadTooLarge) as raw:  # what the server matches on: the type
            fetch(url, cache_dir=tmp_path / "c", max_bytes=1000)
        assert isinstance(raw.value, InputError) and raw.value.max_bytes == 1000
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_413_is_decided_by_the_error_type_not_its_wording(monkeypatch, tmp_path):
    import vitcop_cli.media.download as download
    from vitcop_cli.serve.media import local_file

    cfg = config(allow_remote_media=True, allow_private_media_hosts=True)

    def fails_with(exc):
        def fake_fetch(*args, **kwargs):
            raise exc
        monkeypatch.setattr(download, "fetch", fake_fetch)
        return local_file(resolve_media("http://127.0.0.1:9/x.mp4", cfg, tmp_path), cfg, tmp_path)

    with pytest.raises(ApiError) as info:
        fails_with(download.DownloadTooLarge("the download hit the cap", 1000))
    assert info.value.status == 413 and info.value.message == "the download hit the cap"
    with pytest.raises(InputError) as plain:  # same words, other type: a 400 (the app maps InputError)
        fails_with(InputError("cannot download x: more than the 1000 bytes allowed by the proxy"))
    assert not isinstance(plain.value, ApiError)


# --------------------------------------------------------------------------------------------
# the worker: the next job is decoded and preprocessed while the current one generates
# --------------------------------------------------------------------------------------------


class _FakeSession:
    """Just enough of a Session for the worker; ``generate`` of the first job blocks until the second
    job has been prepared, which can only happen if preparation overlaps generation."""

    def __init__(self):
        import threading
        from types import SimpleNamespace

        self.prepared_questions: list[str] = []
        self.second_prepared = threading.Event()
        self.states_seen: dict = {}
        self.jobs: list = []
        self.processor = SimpleNamespace(tokenizer=SimpleNamespace(decode=lambda ids, **k: " ".join(map(str, ids))))
        self.model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=None))
        from vitcop_cli.media.sampling import FrameRule

        self.frame_rule = FrameRule()

    def load_visual(self, path, *, fps=None, frames=None, max_frames=768, **decoding):
        from vitcop_cli.media.video import load_visual

        return load_visual(path, fps=2.0 if fps is None else fps, frames=frames, max_frames=max_frames)

    def prepare_chat(self, visual, messages, *, max_pixels=None, min_pixels=None):
        from vitcop_cli.api import Prepared

        question = messages[-1]["content"][-1]["text"]
        self.prepared_questions.append(question)
        if len(self.prepared_questions) == 2:
            self.second_prepared.set()
        return Prepared({"input_ids": torch.zeros(1, 3, dtype=torch.long)}, visual, question, 0.0, [])

    def generate(self, prepared, **kwargs):
        from types import SimpleNamespace

        if prepared.question == "q0":
            assert self.second_prepared.wait(60), "the next job was not prepared while this one generated"
            import time

            deadline = time.monotonic() + 60  # a bound on failure, not a timing assertion
            while self.jobs[1].state != "ready" and time.monotonic() < deadline:
                time.sleep(0.01)
            self.states_seen = {job.request.messages[-1]["content"][-1]["text"]: job.state for job in self.jobs}
        return SimpleNamespace(
            generated_ids=[1, 2], tokens=SimpleNamespace(visual=5), pruning=None,
            timings=SimpleNamespace(ttft_s=0.01, model_ttft_s=0.01, prefill_s=0.005),
        )


def test_worker_prepares_the_next_job_while_one_generates_one_ahead_at_most(tmp_path):
    import asyncio

    from vitcop_cli.serve.media import Media
    from vitcop_cli.serve.metrics import Metrics
    from vitcop_cli.serve.request import ChatRequest
    from vitcop_cli.serve.worker import Job, Worker

    session = _FakeSession()
    worker = Worker(session, ServeConfig(model="m", max_queue=4), Metrics(), tmp_path)
    loop = asyncio.new_event_loop()
    try:
        jobs = []
        for i in range(3):
            req = ChatRequest(messages=[{"role": "user", "content": [{"type": "visual"}, {"type": "text", "text": f"q{i}"}]}],
                              media_url="x", max_tokens=2)
            jobs.append(Job(req, Media(source="x", path=SAMPLES / "scene.png"), loop))
        session.jobs = jobs
        assert all(worker.submit(job) for job in jobs)
        worker.start()
        events = []
        for job in jobs:
            events.append(loop.run_until_complete(_terminal(job)))
    finally:
        worker.close(timeout_s=60)
        loop.close()
    assert [kind for kind, _ in events] == ["done", "done", "done"]
    assert session.prepared_questions == ["q0", "q1", "q2"]
    # while q0 generated: q1 prepared and waiting, q2 not started (one job ahead at most)
    assert session.states_seen == {"q0": "generating", "q1": "ready", "q2": "queued"}
    assert worker.in_system == 0


async def _terminal(job):
    import asyncio

    while True:
        kind, value = await asyncio.wait_for(job.events.get(), 60)
        if kind in ("done", "error", "cancelled"):
            return kind, value


# --------------------------------------------------------------------------------------------
# the command: bad options and a taken port fail in one line, before any model is loaded
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--port", "70000"], "--port"),
        (["--max-queue", "-1"], "--max-queue"),
        (["--request-timeout", "0"], "--request-timeout"),
        (["--allowed-media-root", "/no/such/folder"], "--allowed-media-root"),
        (["--preset", "bogus"], "unknown preset 'bogus'"),
        (["--method", "nope"], "unknown pruning method"),
        (["--fps", "1", "--frames", "4"], "mutually exclusive"),
        (["--api-key", " "], "API key is empty"),
        (["--log-level", "loud"], "--log-level"),
        (["--allow-remote-media", "--allowed-media-domains", "a.example,*"], "--allowed-media-domains: '*'"),
        (["--allow-remote-media", "--allowed-media-domains", " , "], "--allowed-media-domains is empty"),
        (["--allowed-media-domains", "a.example"], "add --allow-remote-media"),  # meaningless without it
        (["--allow-private-media-hosts"], "add --allow-remote-media"),
        (["__taken__"], "cannot listen on 127.0.0.1"),
        # serve's own float options: nan / inf / negative are one line naming the option (not a
        # ValueError / OverflowError from converting MiB to bytes)
        *[([opt, value], opt) for opt in ("--max-body-mb", "--max-media-mb", "--request-timeout")
          for value in ("nan", "inf", "-1")],
    ],
)
def test_serve_command_rejects_bad_options_before_loading(args, needle):
    import socket

    from typer.testing import CliRunner

    from vitcop_cli.app import app

    taken = socket.create_server(("127.0.0.1", 0))
    if args == ["__taken__"]:
        args = ["--port", str(taken.getsockname()[1])]
    try:
        result = CliRunner().invoke(app, ["serve", "--model", "/no/such/model", "--offline", *args],
                                    env={"NO_COLOR": "1", "COLUMNS": "300"})
    finally:
        taken.close()
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert "Traceback" not in result.output
