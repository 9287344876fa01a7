"""The FastAPI application: routes, API key, body cap, OpenAI error bodies, response counting.

Contract: :func:`create_app(session, config) <create_app>` returns a FastAPI app serving one loaded
:class:`~vitcop_cli.api.Session`; its lifespan starts and stops the :class:`~vitcop_cli.serve.worker.Worker`.

- ``POST /v1/chat/completions`` (Bearer key when one is set): body read up to ``max_body_bytes``
  (413 beyond), JSON (400 when malformed or nested too deeply), parsed by
  :mod:`~vitcop_cli.serve.request`, media checked by :mod:`~vitcop_cli.serve.media`, then admitted
  (429 + ``Retry-After`` when the queue is full). Work that grows with the body (JSON parsing and
  checking of a body over ``INLINE_PARSE_BYTES``, base64 decoding) runs in a worker thread, never on
  the event loop, so one large request does not hold up the others.
  Non-streaming: waits for the answer. Streaming: waits until the job starts generating (so a
  corrupt video is still a 400), then sends SSE chunks (:mod:`~vitcop_cli.serve.responses`).
  Past ``request_timeout_s`` from admission: 504 (or, mid-stream, an error event) and the
  generation stops. A client that disconnects stops its generation (counted as status 499); so is
  one that disconnects while sending its body (no error logged: it is not a server fault).
- ``GET /v1/models`` (Bearer key when set), ``GET /health`` (200 while serving, 503 once shutting
  down), ``GET /metrics`` (Prometheus text). ``/health`` and ``/metrics`` never need the key.
- Every error is ``{"error": {"message", "type", "param", "code"}}``; an unexpected exception is a
  500 naming only its type (its traceback logged once, as "unexpected error") and the server keeps
  serving. A bad request is always a 4xx.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import api
from .config import ServeConfig
from .errors import ApiError, error_body
from .media import resolve_media
from .metrics import CONTENT_TYPE, Metrics
from .request import ChatRequest, parse_chat_request
from .responses import chunk, completion, sse, usage_chunk, vitcop_report
from .text_stream import AnswerText
from .worker import Job, Worker

log = logging.getLogger("vitcop.serve")

_ENDPOINTS = {"/v1/chat/completions", "/v1/models", "/health", "/metrics"}
_TIMEOUT, _DISCONNECT = "timeout", "disconnect"
CLIENT_CLOSED = 499  # nginx's "client closed request": what a disconnected request is counted as
INLINE_PARSE_BYTES = 64 * 1024  # larger bodies are parsed in a worker thread


def create_app(session, config: ServeConfig) -> FastAPI:
    metrics = Metrics()
    tmp = tempfile.TemporaryDirectory(prefix="vitcop-serve-")  # data: URLs and downloads, deleted after decoding
    tmp_path = Path(tmp.name)
    worker = Worker(session, config, metrics, tmp_path)
    served = {config.model, api.model_identity(config.model)}
    started_at = int(time.time())

    @asynccontextmanager
    async def lifespan(_app):
        worker.start()
        try:
            yield
        finally:
            await run_in_threadpool(worker.close)
            tmp.cleanup()

    app = FastAPI(title="vitcop", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker, app.state.metrics, app.state.config = worker, metrics, config
    app.add_middleware(_CountResponses, metrics=metrics)  # also the 500 of an unexpected exception

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body(exc.status_code, str(exc.detail), code=None), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    def check_key(request: Request) -> None:
        if config.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise ApiError(401, "missing or wrong API key; send the header 'Authorization: Bearer <key>'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/health")
    async def health():
        if not worker.accepting:
            return JSONResponse({"status": "shutting_down"}, status_code=503)
        return {"status": "ok", "model": config.model}

    @app.get("/metrics")
    async def metrics_route():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        return {"object": "list", "data": [
            {"id": config.model, "object": "model", "created": started_at, "owned_by": "vitcop"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        check_key(request)
        raw = await _read_body(request, config.max_body_bytes)
        if len(raw) > INLINE_PARSE_BYTES:
            req = await run_in_threadpool(_parse, raw, config, served)
        else:
            req = _parse(raw, config, served)
        del raw  # free the body before media decoding: one copy of a request's bytes at a time
        media = await run_in_threadpool(resolve_media, req.media_url, config, tmp_path)
        loop = asyncio.get_running_loop()
        job = Job(req, media, loop)
        try:
            admitted = worker.submit(job)
        except ApiError:
            media.cleanup()
            raise
        if not admitted:
            media.cleanup()
            raise ApiError(429, f"the server is busy ({worker.capacity} requests in flight, --max-queue "
                                f"{config.max_queue}); retry later", code="queue_full",
                           headers={"Retry-After": str(config.retry_after_s)})
        deadline = loop.time() + config.request_timeout_s
        if req.stream:
            await _until_started(request, worker, job, deadline, config)
            return _JobStream(_events(worker, job, req, deadline, config), worker, job)
        return await _answer(request, worker, job, deadline, config)

    return app


def _parse(raw: bytearray, config: ServeConfig, served: set[str]) -> ChatRequest:
    """The body's JSON checked into a :class:`ChatRequest` (400 when it is not JSON or nests too deeply)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "the request body's JSON is nested too deeply", code="invalid_json") from None
    return parse_chat_request(body, config, served)


async def _read_body(request: Request, limit: int) -> bytearray:
    """The body, up to ``limit`` bytes (413 beyond; one copy in memory). A client that disconnects before
    sending all of it is a 499, not a server error."""
    too_big = ApiError(413, f"the request body is larger than the server's limit ({limit / 2**20:.4g} MiB)",
                       code="body_too_large")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_big
    raw = bytearray()
    try:
        async for piece in request.stream():
            if len(raw) + len(piece) > limit:
                raise too_big
            raw += piece
    except ClientDisconnect:
        raise _client_closed() from None
    return raw


def _client_closed() -> ApiError:
    return ApiError(CLIENT_CLOSED, "client closed the request", code="client_closed")


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (only after the body has been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _next_event(job: Job, deadline: float, disconnect: asyncio.Future | None):
    """The job's next event, or ``_TIMEOUT`` / ``_DISCONNECT``."""
    getter = asyncio.ensure_future(job.events.get())
    waiting = {getter} if disconnect is None else {getter, disconnect}
    try:
        done, _ = await asyncio.wait(waiting, timeout=max(0.0, deadline - asyncio.get_running_loop().time()),
                                     return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        getter.cancel()
        raise
    if getter in done:
        return getter.result()
    getter.cancel()
    return _DISCONNECT if disconnect is not None and disconnect in done else _TIMEOUT


def _timeout_error(config: ServeConfig) -> ApiError:
    return ApiError(504, f"the request took longer than the server's --request-timeout "
                         f"({config.request_timeout_s:g} s); its generation was stopped", code="timeout")


def _shutdown_error() -> ApiError:
    return ApiError(503, "the server is shutting down; the request was cancelled", code="shutting_down")


async def _wait_for(request: Request, worker: Worker, job: Job, deadline: float, config: ServeConfig, until: str):
    """Wait for ``job``'s ``until`` event ("started" or "done") and return its value. Errors before it
    are plain HTTP errors: timeout 504 (generation stopped), shutdown 503, the job's own error; a client
    that disconnects cancels the job (``_DISCONNECT`` is returned)."""
    disconnect = asyncio.ensure_future(_disconnected(request))
    try:
        while True:
            event = await _next_event(job, deadline, disconnect)
            if event == _TIMEOUT:
                worker.cancel(job, "timeout")
                raise _timeout_error(config)
            if event == _DISCONNECT:
                worker.cancel(job, "disconnect")
                return _DISCONNECT
            kind, value = event
            if kind == until:
                return value
            if kind == "error":
                raise value
            if kind == "cancelled":
                raise _shutdown_error()
    finally:
        disconnect.cancel()


async def _answer(request: Request, worker: Worker, job: Job, deadline: float, config: ServeConfig):
    result = await _wait_for(request, worker, job, deadline, config, "done")
    if result is _DISCONNECT:  # the client is gone
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(completion(job, config.model, result))


async def _until_started(request: Request, worker: Worker, job: Job, deadline: float, config: ServeConfig) -> None:
    """Wait until ``job`` generates (errors before that are plain HTTP errors, not stream events)."""
    if await _wait_for(request, worker, job, deadline, config, "started") is _DISCONNECT:
        raise _client_closed()


async def _events(worker: Worker, job: Job, req: ChatRequest, deadline: float, config: ServeConfig):
    """SSE lines of one streamed answer (see :mod:`~vitcop_cli.serve.responses`)."""
    model, usage = config.model, req.include_usage
    text = AnswerText(req.stop)
    yield sse(chunk(job, model, {"role": "assistant", "content": ""}, include_usage=usage))
    while True:
        event = await _next_event(job, deadline, None)
        if event == _TIMEOUT:
            worker.cancel(job, "timeout")
            yield sse(_timeout_error(config).body())
            return
        kind, value = event
        if kind == "text":
            piece = text.feed(value)
            if piece:
                yield sse(chunk(job, model, {"content": piece}, include_usage=usage))
        elif kind == "done":
            rest = text.finish()
            if rest:
                yield sse(chunk(job, model, {"content": rest}, include_usage=usage))
            if text.text != value.answer:  # the streamer's pieces should decode to the same text
                log.warning("%s: streamed text differs from the decoded answer", job.id)
            yield sse(chunk(job, model, {}, finish_reason=value.finish_reason, include_usage=usage,
                            vitcop=vitcop_report(job, value)))
            if usage:
                yield sse(usage_chunk(job, model, value))
            yield sse("[DONE]")
            return
        elif kind == "error":
            yield sse(value.body())
            return
        elif kind == "cancelled":
            yield sse(_shutdown_error().body())
            return


class _JobStream(StreamingResponse):
    """An SSE response whose job is cancelled if the response ends early (client gone)."""

    def __init__(self, content, worker: Worker, job: Job):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._worker, self._job = worker, job

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._worker.cancel(self._job, "disconnect")  # a no-op when the job has already ended


class _CountResponses:
    """Pure ASGI middleware: ``vitcop_requests_total{endpoint, status}`` for every HTTP response. An
    exception no handler took (a bug) becomes a 500 naming its type, its traceback logged here once;
    raised after the response started, it is left to the server (which closes the connection)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        endpoint = path if path in _ENDPOINTS else "other"
        seen = {}

        async def counting_send(message):
            if message["type"] == "http.response.start" and "status" not in seen:
                seen["status"] = message["status"]
                self.metrics.requests.labels(endpoint, str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception as exc:  # noqa: BLE001 - the last stop before the server: a bug
            if "status" in seen:
                raise
            log.error("unexpected error", exc_info=exc)
            body = error_body(500, f"internal server error ({type(exc).__name__})", code="internal_error")
            await JSONResponse(body, status_code=500)(scope, receive, counting_send)
        except BaseException:
            if "status" not in seen:
                self.metrics.requests.labels(endpoint, "500").inc()
            raise
