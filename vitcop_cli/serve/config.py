"""What ``vitcop serve`` was started with: one frozen dataclass, read by every part of the server.

Contract: :class:`ServeConfig` holds the server-wide settings (the loaded model's name, bind address,
security, queue and size limits, the prefix cache's capacity and its optional folder on disk) and the
per-request defaults that a request's ``"vitcop"`` object or sampling fields may override (preset, method,
frame sampling, pixel cap, answer length). Sizes are bytes, times seconds. :meth:`ServeConfig.check` raises
:class:`~vitcop_cli.errors.InputError` for a bad combination before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..options import check_decoding, check_finite

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServeConfig:
    model: str  # the --model string as given: the model id clients name and /v1/models lists
    host: str = "127.0.0.1"
    port: int = 8000
    preset: str = "1_3"  # default preset (a built-in name or a YAML file given at start-up)
    method: str = "vitcop"
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <key>"
    allowed_media_roots: tuple[Path, ...] = ()  # local paths / file:// URLs only inside these
    allow_remote_media: bool = False  # http(s) media URLs
    allowed_media_domains: tuple[str, ...] = ()  # with remote media: only these hosts (netguard patterns)
    allow_private_media_hosts: bool = False  # with remote media: loopback / private / ... targets too
    max_queue: int = 16  # requests waiting (the one generating not counted); more get 429
    request_timeout_s: float = 600.0  # admission to last byte; past it: 504 and the generation stops
    fps: float | None = None  # default frame sampling (None and frames None: 2.0 fps)
    frames: int | None = None
    max_frames: int = 768
    max_pixels: int | None = None
    min_pixels: int | None = None
    max_new_tokens: int = 256  # when a request gives neither max_tokens nor max_completion_tokens
    resize: str = "fast"  # how clips are decoded (Session.load_visual)
    decoder: str = "decord"
    decode_device: str = "cpu"
    max_body_bytes: int = 64 * MiB
    max_media_bytes: int = 64 * MiB  # a decoded data: URL, a local file or a download
    remote_timeout_s: float = 60.0
    retry_after_s: int = 1  # the Retry-After header of a 429
    # bytes of pruned prefixes kept to answer later requests about the same media (serve.prefix_cache): 0 = off
    # (the default here, for embedding); None = the device's default (what `vitcop serve` passes unless
    # --prefix-cache-mb is given): serve.prefix_cache.default_capacity
    prefix_cache_bytes: int | None = 0
    # --prefix-cache DIR: pruned prefixes also kept on disk (session.prefix_store), found again by later servers;
    # None = no disk tier. --prefix-cache-gb: the folder's size cap in bytes
    prefix_cache_dir: Path | None = None
    prefix_cache_disk_bytes: int = 4 * 2**30

    def check(self) -> "ServeConfig":
        """``self`` if every setting is usable, else :class:`InputError` naming the option."""
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port must be in 0..65535 (got {self.port})")
        if self.max_queue < 0:
            raise InputError("--max-queue must be >= 0")
        check_finite("--request-timeout", self.request_timeout_s)
        if not self.request_timeout_s > 0:
            raise InputError(f"--request-timeout must be a positive number of seconds (got {self.request_timeout_s:g})")
        if self.max_body_bytes < 1:
            raise InputError("--max-body-mb must be positive")
        if self.max_media_bytes < 1:
            raise InputError("--max-media-mb must be positive")
        if self.api_key is not None and not self.api_key.strip():
            raise InputError("the API key is empty; give a non-empty --api-key or VITCOP_API_KEY, or none")
        if (self.allowed_media_domains or self.allow_private_media_hosts) and not self.allow_remote_media:
            given = "--allowed-media-domains" if self.allowed_media_domains else "--allow-private-media-hosts"
            raise InputError(f"{given} applies to remote media only; add --allow-remote-media (or drop {given})")
        if self.prefix_cache_bytes is not None and self.prefix_cache_bytes < 0:
            raise InputError(f"--prefix-cache-mb must be >= 0 (0 turns the prefix cache off; got "
                             f"{self.prefix_cache_bytes / 2**20:g})")
        if self.prefix_cache_disk_bytes < 1:
            raise InputError("--prefix-cache-gb must be a positive number of GiB")
        if self.prefix_cache_dir is not None and self.prefix_cache_dir.exists() and not self.prefix_cache_dir.is_dir():
            raise InputError(f"--prefix-cache {self.prefix_cache_dir}: not a folder")
        check_decoding(self.resize, self.decoder, self.decode_device)
        for root in self.allowed_media_roots:
            if not root.is_absolute() or not root.is_dir():
                raise InputError(f"--allowed-media-root {root}: not an existing folder (give an absolute path)")
        return self
