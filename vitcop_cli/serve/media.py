"""Where a request's ``image_url`` / ``video_url`` points, checked against the server's media policy.

Contract (:func:`resolve_media`, run before a request is queued; :func:`local_file`, run by the
worker before decoding):

- ``data:<mime>;base64,<payload>``: decoded (strict base64) into a private temporary file named
  after the MIME type (``video/mp4`` -> ``.mp4``, ``image/png`` -> ``.png``, ...); deleted once decoded.
  Over ``max_media_bytes`` decoded -> 413.
- ``file:///abs/path`` or a plain absolute path ``/abs/path``: refused (400) unless the server has
  ``--allowed-media-root`` folders and the path *fully resolved* (``os.path.realpath``: symlinks and
  ``..`` followed) lies inside one of them, so a symlink inside a root that points out of it is
  refused too. The resolved path is what gets decoded. A file over ``max_media_bytes`` -> 413.
- ``http://`` / ``https://``: refused (400) unless ``--allow-remote-media``; then downloaded by the
  worker with :func:`vitcop_cli.media.download.fetch` into a private folder deleted after decoding (size
  cap ``max_media_bytes`` -> 413, time limit ``remote_timeout_s``, other failures 400), under the
  server's :func:`media_guard` (:mod:`vitcop_cli.media.netguard`): only ``--allowed-media-domains`` hosts
  when given, and only public addresses unless ``--allow-private-media-hosts``; each redirect hop is
  checked again and each connection goes to the address that was checked. What can be decided
  without DNS (scheme, domain list, a host that is an address literal) is refused here, before the
  request is queued; the rest when the worker connects. Refusals are 400 with code
  ``media_host_refused``, before any request reaches the host.
- Anything else (a relative path, another scheme, a malformed data URL) -> 400.

Errors are :class:`~vitcop_cli.serve.errors.ApiError` with one-line messages.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ..media.netguard import MediaHostGuard, MediaHostRefused
from .config import ServeConfig
from .errors import ApiError, bad_request

# MIME type -> file extension vitcop's decoder recognises.
MIME_EXTENSIONS = {
    "video/mp4": "mp4", "video/webm": "webm", "video/x-matroska": "mkv", "video/matroska": "mkv",
    "video/quicktime": "mov", "video/x-msvideo": "avi", "video/avi": "avi", "video/mpeg": "mpg",
    "video/x-m4v": "m4v", "video/3gpp": "3gp", "video/x-flv": "flv", "video/mp2t": "ts",
    "image/png": "png", "image/jpeg": "jpg", "image/jpg": "jpg", "image/webp": "webp", "image/gif": "gif",
    "image/bmp": "bmp", "image/tiff": "tiff",
}


@dataclass
class Media:
    """One resolved visual: a local file to decode, or a remote URL the worker downloads first."""

    source: str  # how the report names it: the URL / path as given ("data:<mime>" for inline data)
    path: Path | None = None
    url: str | None = None
    temporary: bool = False  # ``path`` is a private temporary file: delete after decoding
    download_dir: Path | None = None  # private folder a remote URL was downloaded into

    def cleanup(self) -> None:
        if self.temporary and self.path is not None:
            self.path.unlink(missing_ok=True)
        if self.download_dir is not None:
            shutil.rmtree(self.download_dir, ignore_errors=True)


def too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, f"{what} is larger than the server's media limit ({limit / 2**20:.4g} MiB)",
                    code="media_too_large")


def resolve_media(url: str, config: ServeConfig, tmp_dir: Path) -> Media:
    """Check ``url`` against the policy; decode inline data into ``tmp_dir``. See the module docstring."""
    if not isinstance(url, str) or not url.strip():
        raise bad_request("the media url is empty")
    url = url.strip()
    lower = url[:16].lower()
    if lower.startswith("data:"):
        return _data_url(url, config, tmp_dir)
    if lower.startswith(("http://", "https://")):
        if not config.allow_remote_media:
            raise bad_request(
                "remote media URLs are disabled on this server (start it with --allow-remote-media); "
                "send the media inline as a data: URL instead"
            )
        try:
            media_guard(config).check_url(url)
        except MediaHostRefused as exc:
            raise _refused(exc) from None
        return Media(source=url, url=url)
    if lower.startswith("file:"):
        parts = urllib.parse.urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise bad_request(f"file URL {url!r} names a remote host; use file:///absolute/path")
        return _local(url, urllib.parse.unquote(parts.path), config)
    if url.startswith("/"):
        return _local(url, url, config)
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme and "/" not in scheme:
        raise bad_request(f"unsupported media URL scheme {scheme + ':'!r}; use data:, file://, an absolute path or http(s)://")
    raise bad_request(f"media path {url!r} is not absolute; give an absolute path, a file:// URL or a data: URL")


def media_guard(config: ServeConfig) -> MediaHostGuard:
    """The remote media policy of ``config`` (``--allowed-media-domains``, ``--allow-private-media-hosts``)."""
    return MediaHostGuard(allowed_domains=config.allowed_media_domains, allow_private=config.allow_private_media_hosts)


def remote_policy(config: ServeConfig) -> str:
    """One phrase for the start-up line: where remote media may come from."""
    if not config.allow_remote_media:
        return "remote media off"
    hosts = ", ".join(config.allowed_media_domains) if config.allowed_media_domains else "any host"
    where = "private addresses included" if config.allow_private_media_hosts else "public addresses only"
    return f"remote media from {hosts} ({where})"


def _refused(exc: MediaHostRefused) -> ApiError:
    return ApiError(400, str(exc), code="media_host_refused")


def _local(given: str, path: str, config: ServeConfig) -> Media:
    if not config.allowed_media_roots:
        raise bad_request(
            "local media paths are disabled on this server (start it with --allowed-media-root DIR); "
            "send the media inline as a data: URL instead"
        )
    if not path.startswith("/"):
        raise bad_request(f"media path {given!r} is not absolute")
    real = Path(os.path.realpath(path))
    roots = [Path(os.path.realpath(r)) for r in config.allowed_media_roots]
    if not any(real.is_relative_to(root) for root in roots):
        raise bad_request(
            f"media path {given!r} is outside the server's --allowed-media-root folders "
            "(symlinks and '..' are resolved before the check)"
        )
    if real.is_file() and real.stat().st_size > config.max_media_bytes:
        raise too_large(f"media file {given!r}", config.max_media_bytes)
    return Media(source=given, path=real)


def _data_url(url: str, config: ServeConfig, tmp_dir: Path) -> Media:
    header, sep, payload = url.partition(",")
    if not sep:
        raise bad_request("malformed data: URL (no ',' before the payload); use data:<mime>;base64,<data>")
    params = [p.strip().lower() for p in header[5:].split(";")]
    mime = params[0]
    if "base64" not in params[1:]:
        raise bad_request("data: URLs must be base64-encoded (data:<mime>;base64,<data>)")
    ext = MIME_EXTENSIONS.get(mime)
    if ext is None:
        shown = mime or "none"
        raise bad_request(
            f"unsupported media type {shown!r} in data: URL; supported: {', '.join(sorted(MIME_EXTENSIONS))}"
        )
    payload = "".join(payload.split())  # tolerate line-wrapped base64
    if len(payload) // 4 * 3 > config.max_media_bytes + 3:
        raise too_large("the inline media", config.max_media_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("the data: URL's payload is not valid base64") from None
    if len(data) > config.max_media_bytes:
        raise too_large("the inline media", config.max_media_bytes)
    fd, name = tempfile.mkstemp(suffix=f".{ext}", prefix="media-", dir=tmp_dir)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return Media(source=f"data:{mime}", path=Path(name), temporary=True)


def local_file(media: Media, config: ServeConfig, tmp_dir: Path) -> Path:
    """The file to decode: ``media.path``, or a private download of ``media.url`` (worker thread).

    Downloads go to a fresh folder under ``tmp_dir`` (never the CLI's shared cache) that
    ``media.cleanup()`` deletes. A download over ``max_media_bytes``
    (:class:`~vitcop_cli.media.download.DownloadTooLarge`) is a 413, a host the :func:`media_guard` refuses
    (a redirect hop, or a name resolving to a refused address) a 400 ``media_host_refused``, any other
    download failure an :class:`~vitcop_cli.errors.InputError` (a 400) with
    :func:`vitcop_cli.media.download.fetch`'s one-line message (nothing the remote sent).
    """
    if media.path is not None:
        return media.path
    from ..media.download import DownloadTooLarge, fetch

    media.download_dir = Path(tempfile.mkdtemp(prefix="download-", dir=tmp_dir))
    try:
        return Path(fetch(media.url, cache_dir=media.download_dir, max_bytes=config.max_media_bytes,
                          timeout_s=config.remote_timeout_s, guard=media_guard(config)))
    except DownloadTooLarge as exc:  # by Content-Length or while streaming
        raise ApiError(413, str(exc), code="media_too_large") from None
    except MediaHostRefused as exc:
        raise _refused(exc) from None
