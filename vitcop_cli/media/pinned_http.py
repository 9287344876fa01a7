"""A ``urllib`` opener whose connections go only to addresses a :class:`~vitcop_cli.media.netguard.MediaHostGuard` checked.

Contract: :func:`guarded_opener` ``(guard)`` returns an ``OpenerDirector`` for ``http`` and ``https``.

- Every connection (the first request and each redirect hop) resolves its host once, through
  ``guard.resolve``, and connects to one of those checked addresses (in order), so a second DNS answer
  cannot swap the address between the check and the connection. The ``Host`` header, and for https
  the SNI name and the certificate check, still use the host name.
- Redirects are followed only after ``guard.check_url`` accepts the new URL (http(s) only, the domain
  list, address literals); the address check then runs again when that hop connects.
- Proxy settings from the environment (``http_proxy`` ...) are not used: a proxy would resolve and
  connect on our behalf, past the check.
- A refusal raises :class:`~vitcop_cli.media.netguard.MediaHostRefused` before any connection is opened.
"""

from __future__ import annotations

import http.client
import socket
import urllib.parse
import urllib.request

from .netguard import MediaHostGuard, MediaHostRefused

__all__ = ["UnreadRedirectBodies", "guarded_opener"]


def _connect(infos: list[tuple], timeout, source_address) -> socket.socket:
    """A socket connected to the first reachable address of ``infos`` (``getaddrinfo`` entries)."""
    error: OSError | None = None
    for family, kind, proto, _canon, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if isinstance(timeout, (int, float)):
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
    raise error or OSError("the host has no address")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    _guard: MediaHostGuard  # set by _factory

    def connect(self) -> None:
        self.sock = _connect(self._guard.resolve(self.host, self.port), self.timeout, self.source_address)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class _PinnedHTTPSConnection(http.client.HTTPSConnection, _PinnedHTTPConnection):
    """``HTTPSConnection.connect`` wraps the pinned socket (its ``super().connect()``) with SNI = the host name."""


def _factory(cls: type, guard: MediaHostGuard):
    def connection(*args, **kwargs):
        conn = cls(*args, **kwargs)
        conn._guard = guard
        return conn
    return connection


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, guard: MediaHostGuard):
        super().__init__()
        self._guard = guard

    def http_open(self, req):
        return self.do_open(_factory(_PinnedHTTPConnection, self._guard), req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, guard: MediaHostGuard):
        super().__init__()
        self._guard = guard

    def https_open(self, req):
        return self.do_open(_factory(_PinnedHTTPSConnection, self._guard), req, context=self._context)


class _Unread:
    """A redirect response's body, closed unread. urllib reads the whole body of a redirect into memory before
    following it (to reuse the connection), with no cap: a hostile server could send gigabytes there. No byte of
    it is needed, so none is read; every byte vitcop does read counts against the download's cap."""

    def __init__(self, fp):
        self._fp = fp

    def read(self, *args) -> bytes:
        return b""

    def close(self) -> None:
        self._fp.close()

    def __getattr__(self, name):
        return getattr(self._fp, name)


class UnreadRedirectBodies(urllib.request.HTTPRedirectHandler):
    """A redirect handler that never reads a redirect's body (:class:`_Unread`); the CLI's and the guarded
    opener's redirect handlers both build on it."""

    def http_error_302(self, req, fp, code, msg, headers):
        return super().http_error_302(req, _Unread(fp), code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _GuardedRedirect(UnreadRedirectBodies):
    def __init__(self, guard: MediaHostGuard):
        super().__init__()
        self._guard = guard

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("location") or headers.get("uri")
        if location:
            try:
                self._guard.check_url(urllib.parse.urljoin(req.full_url, location))
            except MediaHostRefused:
                fp.close()
                raise
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def guarded_opener(guard: MediaHostGuard) -> urllib.request.OpenerDirector:
    """An opener that fetches only what ``guard`` allows (see the module docstring)."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), _GuardedHTTPHandler(guard), _GuardedHTTPSHandler(guard),
        _GuardedRedirect(guard),
    )
