"""Run the app with uvicorn: bind first, then serve until SIGINT / SIGTERM / SIGHUP, then return normally.

Contract: :func:`bind` opens the listening socket (an :class:`~vitcop_cli.errors.InputError` when
the address is unusable), so a taken port fails before a model is loaded. :func:`run` serves the
app on that socket. On the first SIGINT, SIGTERM or SIGHUP (a closed terminal; where the platform
has it) the server stops accepting connections, the worker cancels queued and in-flight generations
(clients get a 503, or an error event mid-stream), open connections are closed, the worker threads
are joined and :func:`run` returns, so ``vitcop serve`` exits 0. (uvicorn re-raises the captured
signal after a graceful stop; this server does not.) A second Ctrl-C forces the exit.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading

import uvicorn

from ..errors import InputError

# SIGHUP (the terminal closed) stops the server like SIGTERM; platforms without it (Windows) skip it.
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host / --port") from None


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit):
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig, frame) -> None:
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first:  # not inline: the interrupted main thread may hold the worker's lock
            threading.Thread(target=self._on_exit, name="vitcop-shutdown", daemon=True).start()

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def run(app, sock: socket.socket, *, log_level: str = "info", graceful_timeout_s: float = 10.0) -> None:
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=graceful_timeout_s)
    server = _Server(config, on_exit=app.state.worker.begin_shutdown)
    server.run(sockets=[sock])
