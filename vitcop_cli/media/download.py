"""Fetch an ``http(s)://`` video or image into a local cache, so a URL can stand where a file goes.

Contract:

- :func:`fetch` ``(url, *, cache_dir=None, max_bytes=None, timeout_s=60.0, progress=False) -> Path``
  returns a local file holding the URL's body. Files are cached in the style of the Hugging Face
  cache: ``<cache_dir>/<first 16 hex digits of sha256(url)>/<file name>``, the file name taken from
  the URL's path (made safe), or from the response's ``Content-Type`` when the path has no media
  extension. A URL already in the cache is not downloaded again.
- The default ``cache_dir`` is :func:`default_cache_dir`: ``$VITCOP_CACHE/media`` when set, else
  ``$HF_HOME/vitcop/media`` when ``HF_HOME`` is set, else ``~/.cache/vitcop/media``.
- The body is streamed into a temporary file in the same folder (mode 0644 less the umask) and
  renamed into place only when complete, so an interrupted or failed download never leaves a
  file that looks cached.
- ``max_bytes`` bounds the body (checked against ``Content-Length`` before reading, and while
  reading); ``timeout_s`` bounds every socket operation and the whole download.
- A URL with credentials (``http://user:password@host/``) is refused before anything is sent:
  :data:`~vitcop_cli.media.netguard.CREDENTIALS_REFUSED` (download such a file yourself and pass its path).
- Every failure (bad scheme, credentials, DNS / connection error, HTTP error status, timeout, body too large,
  truncated body, unwritable cache) raises :class:`~vitcop_cli.errors.InputError` with one line
  naming the URL (credentials removed, shortened) and the reason. A body over ``max_bytes`` raises
  its subclass :class:`DownloadTooLarge` (``.max_bytes`` the cap), so callers such as the server
  (413) tell it apart by type, not by message text. Redirects are followed only to
  ``http`` / ``https``.
- ``progress=True`` shows a rich progress bar on stderr (size, speed, ETA), removed when done.
- ``guard`` (a :class:`~vitcop_cli.media.netguard.MediaHostGuard`; ``vitcop serve`` passes one, the CLI does
  not) checks the URL and every redirect hop and pins each connection to the checked address (see
  :mod:`vitcop_cli.media.pinned_http`); a refusal raises its
  :class:`~vitcop_cli.media.netguard.MediaHostRefused` (an ``InputError``) before anything is sent. With a
  guard, messages carry nothing the remote sent: a status code with its standard phrase (not the
  server's own reason text), and no response line, header or certificate contents.
"""

from __future__ import annotations

import hashlib
import http
import http.client
import mimetypes
import os
import re
import secrets
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..defaults import cache_home
from ..errors import InputError
from .netguard import CREDENTIALS_REFUSED, MediaHostGuard, has_credentials
from .pinned_http import UnreadRedirectBodies, guarded_opener

__all__ = ["DEFAULT_MAX_BYTES", "DownloadTooLarge", "cache_path_for", "default_cache_dir", "fetch", "is_url"]

DEFAULT_MAX_BYTES = 4 * 2**30  # what the CLI allows for one clip: 4 GiB
_CHUNK = 1 << 16
_SCHEMES = ("http", "https")


class DownloadTooLarge(InputError):
    """The body is (or would be, by ``Content-Length``) larger than ``max_bytes``."""

    def __init__(self, message: str, max_bytes: int):
        super().__init__(message)
        self.max_bytes = max_bytes


def is_url(text: str) -> bool:
    """True for an ``http://`` or ``https://`` URL (case-insensitive scheme)."""
    return isinstance(text, str) and text[:8].lower().startswith(("http://", "https://"))


def default_cache_dir() -> Path:
    """Where downloaded media go unless ``cache_dir`` is given (see the module docstring)."""
    return cache_home() / "media"


def cache_path_for(url: str, cache_dir: Path | None = None) -> Path:
    """The folder one URL's file is cached in."""
    key = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / key


def shown(url: str, limit: int = 100) -> str:
    """``url`` without user:password and shortened to ``limit`` characters, for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        pass
    url = "".join(ch if ch.isprintable() else "?" for ch in url)
    return url if len(url) <= limit else url[: limit - 1] + "…"


def fetch(
    url: str,
    *,
    cache_dir: Path | None = None,
    max_bytes: int | None = None,
    timeout_s: float = 60.0,
    progress: bool = False,
    guard: MediaHostGuard | None = None,
) -> Path:
    """Download ``url`` into the cache (once) and return the local file; InputError on failure."""
    if not is_url(url):
        raise InputError(f"not an http(s) URL: {shown(url)}")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise InputError(f"cannot download {shown(url)}: malformed URL ({exc})") from None
    if has_credentials(parts):
        raise InputError(
            f"cannot download {shown(url)}: {CREDENTIALS_REFUSED}; download the file yourself and give its path"
        )
    if guard is not None:
        guard.check_url(url)
    folder = cache_path_for(url, cache_dir)
    cached = _cached_file(folder)
    if cached is not None:
        return cached
    deadline = time.monotonic() + timeout_s
    if guard is None:
        opener, why = urllib.request.build_opener(_SafeRedirect()), _reason
    else:
        opener, why = guarded_opener(guard), _quiet_reason
    request = urllib.request.Request(url, headers={"User-Agent": "vitcop", "Accept-Encoding": "identity"})
    try:
        response = opener.open(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        status = f"{exc.code} {exc.reason}" if guard is None else _standard_status(exc.code)
        raise InputError(f"cannot download {shown(url)}: HTTP {status}") from None
    except urllib.error.URLError as exc:
        raise InputError(f"cannot download {shown(url)}: {why(exc.reason, timeout_s)}") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise InputError(f"cannot download {shown(url)}: {why(exc, timeout_s)}") from None
    with response:
        length = _content_length(response)
        if max_bytes is not None and length is not None and length > max_bytes:
            raise DownloadTooLarge(
                f"cannot download {shown(url)}: it is {_size(length)}, more than the {_size(max_bytes)} allowed",
                max_bytes,
            )
        name = _file_name(url, response.headers.get("Content-Type"))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the download cache {folder}: {exc.strerror or exc}") from None
        target = folder / name
        part = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.part"
        try:
            _stream(response, part, url, length, max_bytes, timeout_s, deadline, progress, why)
            os.replace(part, target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
    return target


# ---- helpers -------------------------------------------------------------------------------
class _SafeRedirect(UnreadRedirectBodies):
    """Follow redirects only to http(s) (urllib would also follow one to ftp://), never to a URL with credentials."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        parts = urllib.parse.urlsplit(newurl)
        if parts.scheme.lower() not in _SCHEMES:
            raise urllib.error.URLError(f"redirected to a non-http(s) URL ({shown(newurl, 60)})")
        if has_credentials(parts):
            raise urllib.error.URLError(f"redirected to {shown(newurl, 60)}: {CREDENTIALS_REFUSED}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _cached_file(folder: Path) -> Path | None:
    try:
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    except OSError:
        return None
    return files[0] if len(files) == 1 else None


def _stream(response, part: Path, url: str, length, max_bytes, timeout_s, deadline, progress, why) -> None:
    bar = _progress_bar(url, length) if progress else None
    received = 0
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise InputError(f"cannot write into the download cache {part.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                if time.monotonic() > deadline:
                    raise InputError(f"cannot download {shown(url)}: timed out after {timeout_s:g} s")
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise InputError(f"cannot download {shown(url)}: {why(exc, timeout_s)}") from None
                if not chunk:
                    break
                received += len(chunk)
                if max_bytes is not None and received > max_bytes:
                    raise DownloadTooLarge(
                        f"cannot download {shown(url)}: more than the {_size(max_bytes)} allowed", max_bytes
                    )
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise InputError(f"cannot write {part.parent}: {exc.strerror or exc}") from None
                if bar is not None:
                    bar[0].update(bar[1], completed=received)
    finally:
        if bar is not None:
            bar[0].stop()
    if length is not None and received < length:
        raise InputError(
            f"cannot download {shown(url)}: the connection closed after {_size(received)} of {_size(length)}"
        )


def _progress_bar(url: str, length: int | None):
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    name = shown(Path(urllib.parse.urlsplit(url).path).name or url, 30)
    bar = Progress(
        TextColumn(f"downloading {escape(name)}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), console=Console(stderr=True), transient=True,
    )
    task = bar.add_task("download", total=length)
    bar.start()
    return bar, task


def _content_length(response) -> int | None:
    try:
        n = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return n if n >= 0 else None


def _file_name(url: str, content_type: str | None) -> str:
    from .video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    raw = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._")[:100] or "download"
    ext = Path(name).suffix.lower().lstrip(".")
    if ext not in VIDEO_EXTENSIONS and ext not in IMAGE_EXTENSIONS and content_type:
        guessed = mimetypes.guess_extension(content_type.split(";")[0].strip().lower())
        if guessed:
            name += guessed
    return name


def _reason(exc, timeout_s: float) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"timed out after {timeout_s:g} s"
    if isinstance(exc, socket.gaierror):
        return "host not found (check the address and your network)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


def _quiet_reason(exc, timeout_s: float) -> str:
    """:func:`_reason` without anything the remote sent (a non-HTTP banner, certificate names)."""
    if isinstance(exc, str):  # urllib's own words
        return exc[:120]
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or type(exc).__name__})"
    if isinstance(exc, http.client.HTTPException):
        return f"the response is not valid HTTP ({type(exc).__name__})"
    if isinstance(exc, (socket.timeout, TimeoutError, socket.gaierror)) or (isinstance(exc, OSError) and exc.strerror):
        return _reason(exc, timeout_s)
    return type(exc).__name__


def _standard_status(code: int) -> str:
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
