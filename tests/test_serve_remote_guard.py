"""Remote media vs. server-side request forgery, against real ``vitcop serve`` processes (issue 20).

Three servers, all ``--allow-remote-media`` with the stored tiny model, started together:

- ``guarded`` (the default policy: public addresses only), started through the test-only launcher
  ``serve_with_public_alias.py`` that counts 127.0.0.2 — and nothing else — as public, so a
  redirect from an allowed host to loopback can be shown on one machine;
- ``listed``: ``--allow-private-media-hosts --allowed-media-domains localhost``;
- ``open``: ``--allow-private-media-hosts`` (today's behaviour before the guard).

The media hosts are local :class:`http_targets.Target` servers that log every accepted connection:
"refused" means a 400 *and* no connection at the target. Each refusal test also shows that the same
URL does reach the target without the guard (the CLI's fetch), so the empty log is not vacuous.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from http_targets import SECRET, Target, can_bind
from test_serve import Server, body, expect_error, launch, ready
from vitcop_cli.media.download import fetch

ALIAS = "127.0.0.2"
LAUNCHER = Path(__file__).resolve().parent / "serve_with_public_alias.py"
needs_alias = pytest.mark.skipif(not can_bind(ALIAS), reason="127.0.0.2 is not a loopback address here")


@pytest.fixture(scope="module")
def launched(tiny_models, tmp_path_factory):
    logs = tmp_path_factory.mktemp("guard")
    model = tiny_models["qwen2_vl"]
    common = ("--allow-remote-media", "--frames", 4, "--max-new-tokens", 2)
    procs = {
        "guarded": launch(model, logs / "guarded.log", *common, entry=(str(LAUNCHER), ALIAS)),
        "listed": launch(model, logs / "listed.log", *common, "--allow-private-media-hosts",
                         "--allowed-media-domains", "localhost"),
        "open": launch(model, logs / "open.log", *common, "--allow-private-media-hosts"),
    }
    yield procs
    for proc, log in procs.values():
        Server(proc, "", log).stop()


@pytest.fixture(scope="module")
def guarded(launched):
    return ready(launched["guarded"])


@pytest.fixture(scope="module")
def listed(launched):
    return ready(launched["listed"])


@pytest.fixture(scope="module")
def open_server(launched):
    return ready(launched["open"])


@pytest.fixture
def alias():
    if not can_bind(ALIAS):
        pytest.skip("127.0.0.2 is not a loopback address here")
    t = Target(ALIAS)
    yield t
    t.close()


def refused(server: Server, url: str, *needles: str) -> dict:
    err = expect_error(server.post(body(url), key=None), 400, "refused", *needles)
    assert err["code"] == "media_host_refused", err
    return err


def answered(server: Server, url: str) -> dict:
    response = server.post(body(url), key=None)
    assert response.status_code == 200, response.text
    out = response.json()
    assert isinstance(out["choices"][0]["message"]["content"], str) and out["vitcop"]["visual"]["path"] == url
    return out


@pytest.mark.parametrize(
    "listen, host",
    [("127.0.0.1", "127.0.0.1"), ("127.0.0.1", "localhost"), ("127.0.0.1", "2130706433"),
     ("127.0.0.1", "0x7f000001"), ("127.0.0.1", "127.1"), ("127.0.0.1", "[::ffff:127.0.0.1]"), ("::1", "[::1]")],
)
def test_loopback_in_any_spelling_is_refused_and_never_contacted(guarded, listen, host, tmp_path):
    if not can_bind(listen):
        pytest.skip(f"cannot listen on {listen} here")
    t = Target(listen)
    try:
        url = t.url(host=host)
        refused(guarded, url, "loopback", "--allow-private-media-hosts")
        assert t.connections == [] and t.requests == []
        assert fetch(url, cache_dir=tmp_path, timeout_s=30).stat().st_size > 0  # unguarded, it does get there
        assert len(t.connections) == 1
    finally:
        t.close()


@needs_alias
def test_a_redirect_from_an_allowed_host_to_loopback_is_refused(guarded, alias, target):
    answered(guarded, alias.url())  # the allowed ("public") host itself is fetched and answered
    refused(guarded, alias.hop(target.url()), "'127.0.0.1' is a loopback address")
    refused(guarded, alias.hop(target.url(host="localhost")), "'localhost' resolves to a loopback address")
    assert [path for path, _ in alias.requests] == ["/clip.mp4", "/hop", "/hop"]
    assert target.connections == []
    assert "remote media from any host (public addresses only)" in guarded.log.read_text()


def test_only_allowed_domains_are_fetched(listed, target):
    answered(listed, target.url(host="localhost"))
    assert target.requests == [("/clip.mp4", f"localhost:{target.port}")]  # Host: the name as given
    refused(listed, target.url(), "'127.0.0.1' is not in the server's --allowed-media-domains")
    refused(listed, target.hop(target.url(), host="localhost"), "--allowed-media-domains")  # checked per hop
    assert [path for path, _ in target.requests] == ["/clip.mp4", "/hop"]
    assert len(target.connections) == 2
    assert "remote media from localhost (private addresses included)" in listed.log.read_text()


def test_allow_private_media_hosts_restores_fetching_from_private_addresses(open_server, target):
    answered(open_server, target.url())
    answered(open_server, target.url(host="2130706433"))
    answered(open_server, target.hop(target.url()))
    assert [path for path, _ in target.requests] == ["/clip.mp4", "/clip.mp4", "/hop", "/clip.mp4"]


def test_remote_errors_never_echo_the_remote_response(open_server, target):
    response = open_server.post(body(target.url("/secret")), key=None)
    err = expect_error(response, 400, "HTTP 404 Not Found")
    assert SECRET not in response.text and err["code"] == "invalid_input"
    assert target.requests == [("/secret", f"127.0.0.1:{target.port}")]
