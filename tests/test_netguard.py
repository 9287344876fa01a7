"""The remote-media guard in-process: address classification, domain patterns, resolution, and
``download.fetch(..., guard=...)`` against local logging targets (:mod:`http_targets`).

Nothing here reaches a non-loopback address: public names are answered by a patched
``socket.getaddrinfo``, and where a test needs a host that counts as public while every target is on
loopback, ``netguard.refused_kind`` is patched to call exactly one loopback address (127.0.0.2) public.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import subprocess
import threading

import pytest

from http_targets import CLIP_BYTES, SECRET, Target, can_bind
from vitcop_cli.media import netguard
from vitcop_cli.media.download import fetch
from vitcop_cli.errors import InputError
from vitcop_cli.media.netguard import (
    MediaHostGuard,
    MediaHostRefused,
    domain_allowed,
    parse_domain_patterns,
    refused_kind,
)

ALIAS = "127.0.0.2"  # the loopback address the tests below may call public
needs_alias = pytest.mark.skipif(not can_bind(ALIAS), reason="127.0.0.2 is not a loopback address here")


# --------------------------------------------------------------------------------------------
# classification (no DNS: every host below is an address literal in some form)
# --------------------------------------------------------------------------------------------

REFUSED = [
    ("127.0.0.1", "loopback"), ("127.1", "loopback"), ("0x7f000001", "loopback"), ("2130706433", "loopback"),
    ("0177.0.0.1", "loopback"), ("0x7f.0.0.1", "loopback"), ("127.255.255.254", "loopback"),
    ("[::1]", "loopback"), ("[::ffff:127.0.0.1]", "loopback"), ("[::ffff:7f00:1]", "loopback"),
    ("[::127.0.0.1]", "loopback"), ("[2002:7f00:1::]", "loopback"),  # IPv4-compatible, 6to4
    ("169.254.169.254", "link-local"), ("[fe80::1]", "link-local"), ("[::ffff:169.254.169.254]", "link-local"),
    ("10.0.0.1", "private"), ("10.255.255.255", "private"), ("172.16.0.1", "private"),
    ("172.31.255.255", "private"), ("192.168.1.1", "private"), ("[fc00::1]", "private"), ("[fd12:3456::1]", "private"),
    ("[::ffff:10.0.0.1]", "private"), ("[64:ff9b::a00:1]", "private"),  # NAT64 of 10.0.0.1
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("[ff02::1]", "multicast"),
    ("0.0.0.0", "unspecified"), ("0", "unspecified"), ("[::]", "unspecified"),
    ("100.64.0.1", "shared"), ("100.127.255.255", "shared"), ("[fec0::1]", "site-local"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"), ("192.0.2.1", "private"),
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "[2606:4700:4700::1111]", "[::ffff:8.8.8.8]"]


@pytest.mark.parametrize("host, kind", REFUSED)
def test_non_public_addresses_are_refused_in_every_spelling(host, kind):
    with pytest.raises(MediaHostRefused) as info:
        MediaHostGuard().check_url(f"http://{host}:8080/clip.mp4")
    message = str(info.value)
    assert re.search(rf"is an? {kind}", message), message  # (not the word "private" of the hint below)
    assert "--allow-private-media-hosts" in message and "\n" not in message
    MediaHostGuard(allow_private=True).check_url(f"http://{host}:8080/clip.mp4")  # the opt-in lets it through


@pytest.mark.parametrize("host", PUBLIC)
def test_public_addresses_pass(host):
    MediaHostGuard().check_url(f"http://{host}/clip.mp4")
    assert refused_kind(ipaddress.ip_address(host.strip("[]"))) is None


def test_a_spelled_out_address_is_named_in_the_refusal():
    with pytest.raises(MediaHostRefused, match=r"'2130706433' is a loopback address \(127\.0\.0\.1\)"):
        MediaHostGuard().check_url("http://2130706433/x.mp4")


@pytest.mark.parametrize("url", ["ftp://8.8.8.8/x", "file:///etc/passwd", "http:///x", "gopher://a/"])
def test_only_http_urls_with_a_host_pass(url):
    with pytest.raises(MediaHostRefused, match="http"):
        MediaHostGuard().check_url(url)


# --------------------------------------------------------------------------------------------
# --allowed-media-domains
# --------------------------------------------------------------------------------------------


def test_domain_patterns_are_normalised_and_validated():
    assert parse_domain_patterns(["Media.Example.COM., *.CDN.example", "[::1],10.0.0.5", "a.example"]) == (
        "media.example.com", "*.cdn.example", "::1", "10.0.0.5", "a.example")
    for bad in ("*", "*.", "a*.example", "*.*.example", "http://a.example", "a.example/x", "a b", "-a.example",
                "*.10.0.0.1", "a..example"):
        with pytest.raises(InputError, match="--allowed-media-domains"):
            parse_domain_patterns([bad])
    with pytest.raises(InputError, match="empty"):
        parse_domain_patterns([" , "])


@pytest.mark.parametrize(
    "host, allowed",
    [("a.example", True), ("b.a.example", True), ("A.EXAMPLE", True), ("a.example.", True), ("example", False),
     ("badexample", False), ("a.example.evil", False), ("exact.test", True), ("sub.exact.test", False),
     ("EXACT.test.", True), ("::1", True), ("[::1]", True), ("0:0::1", True), ("127.0.0.1", False)],
)
def test_domain_matching(host, allowed):
    patterns = parse_domain_patterns(["*.example,exact.test,[::1]"])
    assert domain_allowed(host, patterns) is allowed


def test_hosts_outside_the_domain_list_are_refused_without_a_dns_lookup(monkeypatch):
    looked_up = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: looked_up.append(a) or [])
    guard = MediaHostGuard(allowed_domains=parse_domain_patterns(["*.example"]))
    for url in ("http://example/x.mp4", "http://a.example.evil/x.mp4", "https://badexample/x.mp4"):
        with pytest.raises(MediaHostRefused, match="--allowed-media-domains"):
            guard.check_url(url)
    with pytest.raises(MediaHostRefused, match="--allowed-media-domains"):
        guard.resolve("evil.test", 80)
    assert looked_up == []


# --------------------------------------------------------------------------------------------
# resolution (a patched resolver: no real DNS)
# --------------------------------------------------------------------------------------------


def _answers(table: dict[str, list[str]], calls: list | None = None):
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if calls is not None:
            calls.append(host)
        if host not in table:
            return real(host, port, *args, **kwargs)
        if kwargs.get("flags", 0) & socket.AI_NUMERICHOST:  # a name, not an address literal
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port, 0, 0) if ":" in a else (a, port)) for a in table[host]]
    return getaddrinfo


def test_a_name_is_refused_when_any_of_its_addresses_is_not_public(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", _answers({
        "public.test": ["93.184.215.14"], "inside.test": ["10.1.2.3"], "metadata.test": ["169.254.169.254"],
        "mixed.test": ["93.184.215.14", "127.0.0.1"], "v6.test": ["::ffff:127.0.0.1"],
    }))
    guard = MediaHostGuard()
    assert [info[4][0] for info in guard.resolve("public.test", 443)] == ["93.184.215.14"]
    for name, kind in (("inside.test", "private"), ("metadata.test", "link-local"), ("mixed.test", "loopback"),
                       ("v6.test", "loopback")):
        with pytest.raises(MediaHostRefused, match=f"'{name}' resolves to an? {kind} address; refused"):
            guard.resolve(name, 80)
    assert len(MediaHostGuard(allow_private=True).resolve("mixed.test", 80)) == 2


# --------------------------------------------------------------------------------------------
# fetch(..., guard=...): checked before connecting, on every redirect hop, pinned to the checked address
# --------------------------------------------------------------------------------------------


@pytest.fixture
def alias_public(monkeypatch):
    """127.0.0.2 counts as public (in this process only), and a Target listens there."""
    real = netguard.refused_kind
    monkeypatch.setattr(netguard, "refused_kind", lambda ip: None if str(ip) == ALIAS else real(ip))
    t = Target(ALIAS)
    yield t
    t.close()


def _refused_fetch(url: str, tmp_path, guard: MediaHostGuard, match: str) -> None:
    with pytest.raises(MediaHostRefused, match=match):
        fetch(url, cache_dir=tmp_path / "refused", timeout_s=10, guard=guard)
    assert not (tmp_path / "refused").exists()  # nothing downloaded, not even a cache folder


def test_fetch_refuses_loopback_before_connecting(target, tmp_path):
    guard = MediaHostGuard()
    for host in ("127.0.0.1", "localhost", "2130706433", "127.1", "[::ffff:127.0.0.1]",
                 "127%2e0%2e0%2e1"):  # the last is decoded by urllib only: refused when it connects
        _refused_fetch(target.url(host=host), tmp_path, guard, "loopback")
    assert target.connections == [] and target.requests == []
    # the same URL without a guard (the CLI's fetch) reaches it: the log above could have caught one
    assert fetch(target.url(), cache_dir=tmp_path / "cli", timeout_s=10).read_bytes() == CLIP_BYTES
    assert len(target.connections) == 1


@needs_alias
def test_every_redirect_hop_is_checked(alias_public, target, tmp_path):
    guard = MediaHostGuard()
    assert fetch(alias_public.url(), cache_dir=tmp_path / "ok", timeout_s=10, guard=guard).read_bytes() == CLIP_BYTES
    for to in (target.url(), target.url(host="localhost")):  # refused by the literal check / when connecting
        _refused_fetch(alias_public.hop(to), tmp_path, guard, "loopback")
    _refused_fetch(alias_public.hop("file:///etc/passwd"), tmp_path, guard, r"must be http\(s\)")
    assert target.connections == []
    assert [path for path, _ in alias_public.requests] == ["/clip.mp4", "/hop", "/hop", "/hop"]
    listed = MediaHostGuard(allowed_domains=parse_domain_patterns([ALIAS]), allow_private=True)
    _refused_fetch(alias_public.hop(target.url()), tmp_path, listed, "--allowed-media-domains")
    assert target.connections == []


@needs_alias
def test_the_connection_goes_to_the_checked_address(alias_public, target, tmp_path, monkeypatch):
    """DNS rebinding: the first answer (checked, public) is used; a second answer is never asked for."""
    calls, answers = [], iter([[ALIAS], ["127.0.0.1"], ["127.0.0.1"]])
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        if host != "media.test" or kwargs.get("flags", 0) & socket.AI_NUMERICHOST:  # only real look-ups count
            return real(host, port, *args, **kwargs)
        calls.append(host)
        return _answers({"media.test": next(answers)})(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://media.test:{alias_public.port}/clip.mp4"
    assert fetch(url, cache_dir=tmp_path / "c", timeout_s=10, guard=MediaHostGuard()).read_bytes() == CLIP_BYTES
    assert calls == ["media.test"]
    assert alias_public.requests == [("/clip.mp4", f"media.test:{alias_public.port}")]  # Host: the name
    _refused_fetch(url.replace("clip", "other"), tmp_path, MediaHostGuard(), "'media.test' resolves to a loopback")


def test_guarded_errors_carry_nothing_the_remote_sent(target, tmp_path):
    guard = MediaHostGuard(allow_private=True)
    with pytest.raises(InputError) as info:
        fetch(target.url("/secret"), cache_dir=tmp_path / "c", timeout_s=10, guard=guard)
    assert "HTTP 404 Not Found" in str(info.value) and SECRET not in str(info.value)

    banner = socket.create_server(("127.0.0.1", 0))  # not HTTP: a service that greets with a banner

    def greet():
        conn, _ = banner.accept()
        with conn:
            conn.sendall(f"SSH-2.0-{SECRET}\r\n".encode())
            conn.recv(1024)
    thread = threading.Thread(target=greet, daemon=True)
    thread.start()
    try:
        with pytest.raises(InputError) as info:
            fetch(f"http://127.0.0.1:{banner.getsockname()[1]}/x.mp4", cache_dir=tmp_path / "c", timeout_s=10,
                  guard=guard)
    finally:
        banner.close()
    assert "not valid HTTP" in str(info.value) and SECRET not in str(info.value)


@pytest.fixture
def certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=media.test", "-addext", "subjectAltName=DNS:media.test"],
                   check=True, capture_output=True)
    return cert, key


def test_https_is_pinned_but_checks_the_certificate_against_the_name(certificate, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trust the test certificate
    monkeypatch.setattr(socket, "getaddrinfo", _answers({"media.test": ["127.0.0.1"]}))
    t = Target("127.0.0.1", tls=certificate)
    try:
        guard = MediaHostGuard(allowed_domains=("media.test", "127.0.0.1"), allow_private=True)
        got = fetch(f"https://media.test:{t.port}/clip.mp4", cache_dir=tmp_path / "c", timeout_s=10, guard=guard)
        assert got.read_bytes() == CLIP_BYTES and t.sni == ["media.test"]
        with pytest.raises(InputError, match="TLS failed") as info:  # the certificate names media.test only
            fetch(f"https://127.0.0.1:{t.port}/clip.mp4", cache_dir=tmp_path / "c2", timeout_s=10, guard=guard)
        assert "media.test" not in str(info.value)
    finally:
        t.close()
