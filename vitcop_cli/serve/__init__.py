"""``vitcop serve``: an OpenAI-compatible Chat Completions server over one loaded :class:`~vitcop_cli.api.Session`.

Parts, each with its own contract: :mod:`.config` (settings), :mod:`.request` (body -> ChatRequest),
:mod:`.media` (media URLs and the media policy), :mod:`.worker` (bounded queue, prepare + generation
threads, cancellation), :mod:`.stopping` (per-token stop checks), :mod:`.text_stream` (the answer
text, streamed or not), :mod:`.responses` (OpenAI bodies and SSE), :mod:`.metrics` (Prometheus),
:mod:`.errors` (OpenAI error bodies), :mod:`.app` (FastAPI routes), :mod:`.server` (uvicorn, signals).

Needs the ``serve`` extra (``pip install -e ".[serve]"``: fastapi, uvicorn, prometheus-client).
"""

from __future__ import annotations

from .config import ServeConfig

__all__ = ["ServeConfig", "create_app", "serve"]


def create_app(session, config: ServeConfig):
    from .app import create_app as _create_app

    return _create_app(session, config)


def serve(session, config: ServeConfig, sock, *, log_level: str = "info") -> None:
    """Serve ``session`` on the bound socket ``sock`` until SIGINT / SIGTERM / SIGHUP (then return)."""
    from .server import run

    run(create_app(session, config), sock, log_level=log_level)
