"""Local HTTP(S) servers for the remote-media guard tests that log every connection they accept.

A :class:`Target` listens on one loopback address (``127.0.0.1``, ``127.0.0.2``, ``::1``) and
records each accepted connection (``connections``) and each request (``requests``: path and Host
header), so a test can assert that a refused URL never reached it — not even a TCP connection.
Routes: ``/clip.mp4`` (the sample clip), ``/hop?to=URL`` (302 to URL), ``/heavy-hop?to=URL&mb=N`` (302 to
URL with an N MiB body; ``redirect_body_sent`` counts the bytes the client took), ``/secret`` (404 whose reason
phrase, header and body hold ``SECRET``). Nothing leaves the machine.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
import urllib.parse
from pathlib import Path

CLIP_BYTES = (Path(__file__).resolve().parent.parent / "samples" / "shapes.mp4").read_bytes()
SECRET = "SECRET-7f3a"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        target: Target = self.server.target
        parts = urllib.parse.urlsplit(self.path)
        target.requests.append((parts.path, self.headers.get("Host")))
        if parts.path == "/clip.mp4":
            self._send(200, "OK", CLIP_BYTES, "video/mp4")
        elif parts.path == "/hop":
            self.send_response(302)
            self.send_header("Location", urllib.parse.parse_qs(parts.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/heavy-hop":
            query = urllib.parse.parse_qs(parts.query)
            size = int(query["mb"][0]) << 20
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * (1 << 16)
            try:
                for _ in range(size // len(chunk)):
                    self.wfile.write(chunk)
                    target.redirect_body_sent += len(chunk)
            except OSError:  # the client closed the connection: it did not read the rest
                pass
        elif parts.path == "/secret":
            self._send(404, f"Gone {SECRET}", f"body {SECRET}".encode(), "text/plain", {"X-Internal": SECRET})
        else:
            self._send(404, "Not Found", b"", "text/plain")

    def _send(self, code, reason, body: bytes, ctype: str, headers: dict | None = None):
        self.send_response(code, reason)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def verify_request(self, request, client_address) -> bool:  # called for every accepted connection
        self.target.connections.append(client_address)
        return True


class Target:
    """One logging HTTP server on ``host`` (a free port); ``tls=(certfile, keyfile)`` serves https."""

    def __init__(self, host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None):
        self.connections: list = []
        self.requests: list[tuple[str, str | None]] = []
        self.sni: list[str | None] = []
        self.redirect_body_sent = 0
        server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6}) if ":" in host else _Server
        self.httpd = server_class((host, 0), _Handler)
        self.httpd.target = self
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*map(str, tls))
            ctx.sni_callback = lambda sock, name, _ctx: self.sni.append(name)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.host, self.port = host, self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/clip.mp4", host: str | None = None, scheme: str = "http") -> str:
        host = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme}://{host}:{self.port}{path}"

    def hop(self, to: str, host: str | None = None) -> str:
        """A URL on this target that redirects to ``to``."""
        return self.url("/hop?to=" + urllib.parse.quote(to, safe=""), host)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def can_bind(host: str) -> bool:
    """True when ``host`` can be listened on here (``::1``: some containers have no IPv6;
    ``127.0.0.2``: only Linux routes all of 127/8 to loopback)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True
