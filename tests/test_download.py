"""``vitcop_cli.media.download.fetch`` against a local ``http.server`` on 127.0.0.1 (no network needed)."""

from __future__ import annotations

import http.server
import json
import socket
import stat
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from vitcop_cli.media.download import cache_path_for, default_cache_dir, fetch, is_url
from vitcop_cli.errors import InputError

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CLIP_BYTES = (SAMPLES / "shapes.mp4").read_bytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: bytes, length: int | None = None, ctype: str = "application/octet-stream"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the client gave up (the timeout case)
            pass

    def do_GET(self):  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        _Handler.hits[path] = _Handler.hits.get(path, 0) + 1
        if path in ("/media/shapes.mp4", "/noext"):
            self._send(200, CLIP_BYTES, len(CLIP_BYTES), "video/mp4")
        elif path == "/missing.mp4":
            self._send(404, b"not here", 8)
        elif path == "/slow.mp4":
            time.sleep(2.0)
            self._send(200, b"late", 4)
        elif path == "/big.mp4":
            self._send(200, b"x" * 200_000, 200_000)
        elif path == "/nolength.mp4":  # no Content-Length: the size is only known while reading
            self.close_connection = True
            self._send(200, b"y" * 200_000, None)
        elif path == "/short.mp4":  # promises 100000 bytes, sends 10 and hangs up
            self.close_connection = True
            self._send(200, b"z" * 10, 100_000)
        elif path == "/to-file.mp4":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"", 0)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _no_partial_files(cache: Path) -> None:
    assert not [p for p in cache.rglob("*") if p.name.endswith(".part")]


def test_is_url():
    assert is_url("http://x/a.mp4") and is_url("HTTPS://x/a.mp4")
    assert not is_url("clip.mp4") and not is_url("ftp://x/a.mp4") and not is_url("file:///a.mp4")


def test_fetch_downloads_once_into_a_hashed_cache_folder(server, tmp_path):
    url = f"{server}/media/shapes.mp4"
    before = _Handler.hits.get("/media/shapes.mp4", 0)
    path = fetch(url, cache_dir=tmp_path)
    assert path.read_bytes() == CLIP_BYTES
    assert path.name == "shapes.mp4"  # the extension survives: the media loader picks the decoder by it
    assert path.parent == cache_path_for(url, tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044 or stat.S_IMODE(path.stat().st_mode) == 0o600
    again = fetch(url, cache_dir=tmp_path, progress=True)
    assert again == path
    assert _Handler.hits["/media/shapes.mp4"] == before + 1  # the second call came from the cache
    _no_partial_files(tmp_path)


def test_fetch_names_a_file_without_extension_from_content_type(server, tmp_path):
    path = fetch(f"{server}/noext", cache_dir=tmp_path, progress=True)
    assert path.suffix == ".mp4" and path.read_bytes() == CLIP_BYTES


@pytest.mark.parametrize(
    "route, kwargs, needles",
    [
        ("/missing.mp4", {}, ["HTTP 404"]),
        ("/slow.mp4", {"timeout_s": 0.5}, ["timed out after 0.5 s"]),
        ("/big.mp4", {"max_bytes": 1000}, ["more than the 1000 bytes allowed", "195.3 KiB"]),
        ("/nolength.mp4", {"max_bytes": 1000}, ["more than the 1000 bytes allowed"]),
        ("/short.mp4", {}, ["closed after 10 bytes of 97.7 KiB"]),
        ("/to-file.mp4", {}, ["HTTP 302", "not allowed"]),
    ],
    ids=["404", "timeout", "too-big-by-header", "too-big-while-reading", "truncated", "redirect-to-file"],
)
def test_fetch_failures_are_one_line_input_errors(server, tmp_path, route, kwargs, needles):
    url = f"{server}{route}"
    with pytest.raises(InputError) as info:
        fetch(url, cache_dir=tmp_path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"cannot download {url}")
    for needle in needles:
        assert needle in message, (needle, message)
    assert not cache_path_for(url, tmp_path).exists() or not any(cache_path_for(url, tmp_path).iterdir())
    _no_partial_files(tmp_path)


def test_fetch_connection_refused_and_bad_scheme(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match="connection refused|Connection refused"):
        fetch(f"http://127.0.0.1:{port}/a.mp4", cache_dir=tmp_path, timeout_s=5)
    with pytest.raises(InputError, match="not an http"):
        fetch("ftp://127.0.0.1/a.mp4", cache_dir=tmp_path)


def test_messages_never_show_credentials(server, tmp_path):
    url = server.replace("http://", "http://user:s3cret@") + "/missing.mp4"
    with pytest.raises(InputError) as info:
        fetch(url, cache_dir=tmp_path)
    assert "s3cret" not in str(info.value) and "user:s3cret" not in str(info.value)
    assert str(info.value).startswith(f"cannot download {server}/missing.mp4: ")
    assert "URLs with credentials (user:password@) are not supported" in str(info.value)  # refused, not sent


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("VITCOP_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert default_cache_dir() == tmp_path / "hf" / "vitcop" / "media"
    monkeypatch.setenv("VITCOP_CACHE", str(tmp_path / "vc"))
    assert default_cache_dir() == tmp_path / "vc" / "media"


def test_ask_takes_a_url(server, tmp_path, tiny_models, monkeypatch):
    """`vitcop ask http://...` downloads into the cache and answers about the file."""
    from typer.testing import CliRunner

    from vitcop_cli.app import app

    monkeypatch.setenv("VITCOP_CACHE", str(tmp_path / "cache"))
    url = f"{server}/media/shapes.mp4"
    result = CliRunner().invoke(app, ["ask", url, "What happens?", "--model", str(tiny_models["qwen2_vl"]),
                                      "--offline", "--frames", "4", "--max-new-tokens", "2", "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    d = json.loads(result.stdout)
    assert Path(d["visual"]["path"]) == cache_path_for(url, tmp_path / "cache" / "media") / "shapes.mp4"
    assert d["visual"]["frames"] == 4
    bad = CliRunner().invoke(app, ["ask", f"{server}/missing.mp4", "What happens?", "--model",
                                   str(tiny_models["qwen2_vl"]), "--offline"])
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines() == [f"error: cannot download {server}/missing.mp4: HTTP 404 Not Found"]


@pytest.mark.parametrize("guarded", [False, True], ids=["cli", "serve"])
def test_a_redirects_body_is_never_read(target, tmp_path, guarded):
    """urllib reads a redirect's whole body into memory before following it, with no cap (issue 25, item 6): a
    64 MiB redirect body against a 1 MiB cap. vitcop closes it unread, so the download costs only the clip."""
    import tracemalloc

    from vitcop_cli.media.netguard import MediaHostGuard

    guard = MediaHostGuard(allow_private=True) if guarded else None
    hop = target.url("/heavy-hop?mb=64&to=" + urllib.parse.quote(target.url(), safe=""))
    tracemalloc.start()
    try:
        path = fetch(hop, cache_dir=tmp_path, max_bytes=1 << 20, guard=guard)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.read_bytes() == CLIP_BYTES
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB traced while downloading"
    assert target.redirect_body_sent < 32 << 20  # what the socket buffers took before the client closed
