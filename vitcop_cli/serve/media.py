"""Where a request's ``image_url`` / ``video_url`` points, checked against the server's media policy.

Contract (:func:`resolve_media`, run before a request is queued; :func:`local_file`, run by the
worker before decoding):

- ``data:<mime>;base64,<payload>``: decoded (strict base64; ASCII whitespace such as line breaks
  ignored) into a private temporary file named after the MIME type (``video/mp4`` -> ``.mp4``,
  ``image/png`` -> ``.png``, ...); deleted once decoded. Decoding streams: ``DATA_CHUNK`` characters
  at a time go to the file, so the memory it needs is a few chunks whatever the payload's size or
  whitespace, and it stops (413) as soon as more than ``max_media_bytes`` have been decoded. The header
  (``data:<mime>;base64``) must come within ``DATA_HEADER_CHARS`` characters. Error messages never
  show the temporary file.
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
- Anything else (a relative path, another scheme, a malformed data or file URL, a path with a NUL
  byte or longer than the file system allows) -> 400.

Errors are :class:`~vitcop_cli.serve.errors.ApiError` with one-line messages; they quote at most a
short prefix of the URL. (Pixel counts and aspect ratios are checked by the library's decoder,
:func:`vitcop_cli.media.video.load_visual`: an :class:`~vitcop_cli.errors.InputError`, a 400.)
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
from .errors import ApiError, bad_request, shown

DATA_CHUNK = 1 << 20  # characters of a data: URL decoded at a time
DATA_HEADER_CHARS = 256  # "data:<mime>;base64," must end within this many characters
_NAME_MAX, _PATH_MAX = 255, 4095  # bytes in one path component / a whole path (Linux)
_BASE64_WHITESPACE = b" \t\n\r\x0b\x0c"

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
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError as exc:
            raise bad_request(f"malformed file URL {shown(url)} ({exc}); use file:///absolute/path") from None
        if parts.netloc not in ("", "localhost"):
            raise bad_request(f"file URL {shown(url)} names a remote host; use file:///absolute/path")
        return _local(url, urllib.parse.unquote(parts.path), config)
    if url.startswith("/"):
        return _local(url, url, config)
    scheme = url.split(":", 1)[0] if ":" in url[:64] else ""
    if scheme and "/" not in scheme:
        raise bad_request(f"unsupported media URL scheme {shown(scheme + ':')}; use data:, file://, an absolute path "
                          "or http(s)://")
    raise bad_request(f"media path {shown(url)} is not absolute; give an absolute path, a file:// URL or a data: URL")


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
        raise bad_request(f"media path {shown(given)} is not absolute")
    _check_path_name(given, path)
    real = Path(os.path.realpath(path))
    roots = [Path(os.path.realpath(r)) for r in config.allowed_media_roots]
    if not any(real.is_relative_to(root) for root in roots):
        raise bad_request(
            f"media path {shown(given)} is outside the server's --allowed-media-root folders "
            "(symlinks and '..' are resolved before the check)"
        )
    try:
        big = real.is_file() and real.stat().st_size > config.max_media_bytes
    except OSError as exc:  # e.g. a component that is not a folder, or a permission denied
        raise bad_request(f"media path {shown(given)} cannot be read ({exc.strerror})") from None
    if big:
        raise too_large(f"media file {shown(given)}", config.max_media_bytes)
    return Media(source=given, path=real)


def _check_path_name(given: str, path: str) -> None:
    """400 for a path no file system accepts: a NUL byte, or a name or path longer than Linux allows."""
    if "\0" in path:
        raise bad_request(f"media path {shown(given)} contains a NUL byte")
    encoded = os.fsencode(path)
    if len(encoded) > _PATH_MAX or any(len(part) > _NAME_MAX for part in encoded.split(b"/")):
        raise bad_request(f"media path {shown(given)} is too long (at most {_NAME_MAX} bytes a name, "
                          f"{_PATH_MAX} in all)")


def _data_url(url: str, config: ServeConfig, tmp_dir: Path) -> Media:
    comma = url.find(",", 0, DATA_HEADER_CHARS)
    if comma < 0:
        raise bad_request("malformed data: URL (no ',' after a short header); use data:<mime>;base64,<data>")
    params = [p.strip().lower() for p in url[5:comma].split(";")]
    mime = params[0]
    if "base64" not in params[1:]:
        raise bad_request("data: URLs must be base64-encoded (data:<mime>;base64,<data>)")
    ext = MIME_EXTENSIONS.get(mime)
    if ext is None:
        raise bad_request(
            f"unsupported media type {shown(mime or 'none')} in data: URL; supported: {', '.join(sorted(MIME_EXTENSIONS))}"
        )
    fd, name = tempfile.mkstemp(suffix=f".{ext}", prefix="media-", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            _decode_base64(url, comma + 1, fh, config.max_media_bytes)
    except BaseException:
        os.unlink(name)
        raise
    return Media(source=f"data:{mime}", path=Path(name), temporary=True)


def _decode_base64(url: str, start: int, out, limit: int) -> None:
    """Strict base64 of ``url[start:]`` (ASCII whitespace ignored) decoded into ``out``, ``DATA_CHUNK``
    characters at a time; 400 when it is not base64, 413 once more than ``limit`` bytes come out."""
    invalid = bad_request("the data: URL's payload is not valid base64")
    carry, written, padded = b"", 0, False
    for at in range(start, len(url), DATA_CHUNK):
        try:
            piece = url[at:at + DATA_CHUNK].encode("ascii")
        except UnicodeEncodeError:
            raise invalid from None
        piece = carry + piece.translate(None, _BASE64_WHITESPACE)
        whole = len(piece) // 4 * 4
        carry = piece[whole:]
        if not whole:
            continue
        if padded:  # data after '=' padding
            raise invalid
        try:
            data = base64.b64decode(piece[:whole], validate=True)
        except (binascii.Error, ValueError):
            raise invalid from None
        padded = piece[whole - 1:whole] == b"="
        written += len(data)
        if written > limit:
            raise too_large("the inline media", limit)
        out.write(data)
    if carry or not written:
        raise invalid
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
