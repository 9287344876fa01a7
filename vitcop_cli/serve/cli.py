"""The ``vitcop serve`` command (registered on the CLI app by :mod:`vitcop_cli.app`): parse, validate,
bind, load the model once, serve.

Contract: options are validated (the shared run-option checks, then :meth:`ServeConfig.check`) and
the address is bound before the model is loaded, so a bad option or a taken port fails in a second
with one line and exit status 2 (``nan`` / ``inf`` / non-positive sizes and timeouts included).
Missing ``serve`` extra -> exit 2 naming the install command. Once the server stops on SIGINT /
SIGTERM / SIGHUP the command returns: exit status 0; the same signals while the model is still
loading stop it too, with one line and status 0. Importing this module is cheap (no FastAPI, no torch).
``--prefix-cache-mb`` left out is resolved once the model is loaded, on its device
(:func:`~vitcop_cli.serve.prefix_cache.default_capacity`); the start-up line states the capacity.
``--prefix-cache DIR`` (env ``VITCOP_PREFIX_CACHE``) adds the disk tier, capped at ``--prefix-cache-gb``: both
checked and the folder created before the model loads (a file there, a bad size: exit 2).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from ..cli import option_types as o
from ..errors import InputError

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _mib_to_bytes(option: str, mib: float) -> int:
    """``mib`` MiB as a positive whole number of bytes; InputError naming ``option`` for nan / inf / <= 0."""
    from ..options import check_finite

    check_finite(option, mib)
    n = int(mib * 2**20)
    if n < 1:
        raise InputError(f"{option} must be positive and at least one byte (got {mib:g})")
    return n


def _prefix_cache_bytes(mib: float | None) -> int | None:
    """``--prefix-cache-mb`` in bytes (None: the device's default); InputError for nan / inf / < 0."""
    if mib is None:
        return None
    from ..options import check_finite

    check_finite("--prefix-cache-mb", mib)
    if mib < 0:
        raise InputError(f"--prefix-cache-mb must be >= 0 (0 turns the prefix cache off; got {mib:g})")
    return int(mib * 2**20)


def _cache_phrase(capacity: int, folder: Path | None = None, disk_bytes: int = 0) -> str:
    memory = f"prefix cache {capacity / 2**20:,.0f} MiB" if capacity else "prefix cache off"
    if folder is None:
        return memory
    return f"{memory if capacity else 'prefix cache: no memory tier'} + disk {folder} ({disk_bytes / 2**30:g} GiB)"


def serve_cmd(
    model: o.Model = o.DEFAULT_MODEL,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 exposes the server to the network)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on (0: any free port, printed at start)."),
    preset: str = typer.Option(
        "1_3", "--preset", "-p", help="Default pruning preset; a request may pick a built-in one under \"vitcop\"."
    ),
    method: str = typer.Option("vitcop", "--method", help="Default pruning method (see `vitcop methods`)."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="VITCOP_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1/* requests."
    ),
    allowed_media_root: Optional[list[Path]] = typer.Option(
        None, "--allowed-media-root", metavar="DIR",
        help="Allow file:// URLs and absolute paths inside DIR (repeatable; symlinks resolved). Default: none.",
    ),
    allow_remote_media: bool = typer.Option(
        False, "--allow-remote-media", metavar="",
        help="Allow http(s):// media URLs (downloaded with size and time limits; public addresses only by default).",
    ),
    allowed_media_domains: Optional[list[str]] = typer.Option(
        None, "--allowed-media-domains", metavar="HOSTS",
        help="With --allow-remote-media: fetch only from these hosts (comma list, repeatable; "
        "'*.example.com' = any host under example.com). Default: any public host.",
    ),
    allow_private_media_hosts: bool = typer.Option(
        False, "--allow-private-media-hosts", metavar="",
        help="With --allow-remote-media: also fetch from loopback / private / link-local addresses "
        "(trusted LAN only: clients can then reach services inside the server's network).",
    ),
    max_queue: int = typer.Option(16, "--max-queue", help="Requests that may wait; beyond that: 429 + Retry-After."),
    request_timeout: float = typer.Option(
        600.0, "--request-timeout", help="Seconds from admission to the full answer; past it: 504, generation stopped."
    ),
    max_body_mb: float = typer.Option(
        64.0, "--max-body-mb", help="Largest request body (MiB); beyond: 413, before it is read in full."
    ),
    max_media_mb: float = typer.Option(
        64.0, "--max-media-mb",
        help="Largest media file / decoded data: URL / download (MiB); beyond: 413 (data: URLs decoded in 1 MiB steps).",
    ),
    prefix_cache_mb: Optional[float] = typer.Option(
        None, "--prefix-cache-mb", metavar="MIB",
        help="Memory (MiB) for pruned prefixes reused across requests about the same media bytes and options "
        "(e.g. each turn of a chat about one video): least recently used evicted first; 0: off. "
        "Default: 10% of the GPU's memory on CUDA, else min(10% of RAM, 2048).",
    ),
    prefix_cache: o.PrefixCache = None,
    prefix_cache_gb: o.PrefixCacheGb = 4.0,
    fps: o.Fps = None,
    frames: o.Frames = None,
    max_frames: o.MaxFrames = 768,
    max_pixels: o.MaxPixels = None,
    min_pixels: o.MinPixels = None,
    max_new_tokens: o.MaxNewTokens = 256,
    device: o.Device = "auto",
    dtype: o.Dtype = "auto",
    attn: o.Attn = "auto",
    resize: o.Resize = "fast",
    decoder: o.Decoder = "decord",
    decode_device: o.DecodeDevice = "cpu",
    log_level: str = typer.Option("info", "--log-level", help="Server log level: " + ", ".join(_LOG_LEVELS) + "."),
    offline: o.Offline = False,
    debug: o.Debug = False,
) -> None:
    """Serve the model over an OpenAI-compatible API (POST /v1/chat/completions with video_url / image_url).

    Loads the model once and answers one request at a time; the rest wait in a bounded queue.
    A video's pruned prefix (system prompt + visual) is kept and reused by later requests about the same media
    bytes and options, bit-identical to answering afresh (--prefix-cache-mb); with --prefix-cache DIR also on disk,
    so a restarted server (or another one sharing DIR) skips decoding and prefilling clips seen before.
    Binds to 127.0.0.1 unless --host says otherwise.
    Per request: at most 4 stop strings of 1,000 characters each; a bad request is a 4xx with a one-line reason. Ctrl-C / SIGTERM / SIGHUP: stop, cancel in-flight work, exit 0
    (also while the model is still loading).
    """
    from rich.markup import escape

    from ..cli.common import check_prefix_cache, err, fail, prefix_store, state
    from ..cli.signals import Terminated, terminate_as_interrupt

    state["debug"] = debug
    sock = None
    try:
        from .. import api, options
        from .config import ServeConfig

        options.check_run_options(  # fail fast, before loading a model
            [preset], [method], fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels,
            min_pixels=min_pixels, max_new_tokens=max_new_tokens,
        )
        try:
            from . import serve
            from .server import bind
        except ImportError as exc:
            raise InputError(
                f"vitcop serve needs the serve extra ({exc.name} is missing): pip install -e \".[serve]\""
            ) from None
        check_prefix_cache(prefix_cache, prefix_cache_gb)
        if log_level not in _LOG_LEVELS:
            raise InputError(f"--log-level must be one of {', '.join(_LOG_LEVELS)}")
        from ..media.netguard import parse_domain_patterns
        from .media import remote_policy

        domains = parse_domain_patterns(allowed_media_domains) if allowed_media_domains is not None else ()
        config = ServeConfig(
            model=model, host=host, port=port, preset=preset, method=method, api_key=api_key,
            allowed_media_roots=tuple(r.expanduser().resolve() for r in allowed_media_root or ()),
            allow_remote_media=allow_remote_media, allowed_media_domains=domains,
            allow_private_media_hosts=allow_private_media_hosts, max_queue=max_queue, request_timeout_s=request_timeout,
            fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels, min_pixels=min_pixels,
            max_new_tokens=max_new_tokens, max_body_bytes=_mib_to_bytes("--max-body-mb", max_body_mb),
            max_media_bytes=_mib_to_bytes("--max-media-mb", max_media_mb), resize=resize, decoder=decoder,
            decode_device=decode_device, prefix_cache_bytes=_prefix_cache_bytes(prefix_cache_mb),
            prefix_cache_dir=prefix_cache.expanduser() if prefix_cache is not None else None,
            prefix_cache_disk_bytes=max(1, int(prefix_cache_gb * 2**30)),
        ).check()
        prefix_store(config.prefix_cache_dir, prefix_cache_gb)  # creates the folder, or says why it cannot
        sock = bind(host, port)
        api.quiet_library_logs(debug)
        try:
            with terminate_as_interrupt(), err.status(f"loading {escape(model)} …", spinner="dots"):
                session = api.load(model, device=device, dtype=dtype, attn=attn, offline=offline)
        except KeyboardInterrupt as exc:  # Ctrl-C / SIGTERM / SIGHUP while loading: a stop, like one while serving
            why = exc.signal_name if isinstance(exc, Terminated) else "Ctrl-C"
            err.print(f"stopped ({why}) before the model finished loading; nothing was served", highlight=False)
            raise typer.Exit(0) from None
        from .prefix_cache import resolve_capacity

        config = dataclasses.replace(config, prefix_cache_bytes=resolve_capacity(config.prefix_cache_bytes,
                                                                                  session.device))
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        cache = _cache_phrase(config.prefix_cache_bytes, config.prefix_cache_dir, config.prefix_cache_disk_bytes)
        err.print(
            f"serving {escape(model)} on http://{shown}:{bound[1]}/v1 "
            f"({'API key required' if api_key else 'no API key'}; {escape(remote_policy(config))}; "
            f"{escape(cache)}; Ctrl-C to stop)",
            highlight=False, soft_wrap=True,
        )
        if getattr(session, "demo_model", False):
            err.print(f"note: {escape(model)} is a random-weight demo model: its answers are meaningless text",
                      highlight=False, soft_wrap=True)
        serve(session, config, sock, log_level=log_level)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        if isinstance(exc, typer.Exit):
            raise
        fail(exc)
    finally:
        if sock is not None:
            sock.close()
