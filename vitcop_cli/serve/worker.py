"""One model, one generation at a time: the bounded queue and the two threads behind the server.

Contract:

- :meth:`Worker.submit` admits a :class:`Job` unless ``max_queue + 1`` jobs (the one generating and
  ``max_queue`` waiting) are already in the system; then it returns ``False`` (the app answers 429).
  After :meth:`Worker.begin_shutdown` it raises a 503 :class:`ApiError`.
- A *prepare* thread resolves (downloads), decodes and preprocesses the next job while the
  *generation* thread runs the current one, one job ahead at most (as ``vitcop batch`` does).
- Each job reports to its request handler through ``job.events`` (an ``asyncio.Queue`` on the
  server's loop, fed thread-safely): ``("started", None)`` when its generation begins,
  ``("text", piece)`` while it generates (streaming requests only), then exactly one terminal event:
  ``("done", Outcome)``, ``("error", ApiError)`` or ``("cancelled", reason)``.
- :meth:`Worker.cancel` (client disconnected, request timed out, shutdown) sets the job's cancel
  flag: a waiting job is dropped at once (its slot freed), a generating one stops at its next token
  through the :class:`~vitcop_cli.serve.stopping.CancelFlag` stopping criterion, so the next request
  does not wait for an abandoned one.
- Every job ends in exactly one ``vitcop_generations_total{outcome}`` count (see
  :mod:`~vitcop_cli.serve.metrics`); a bad input is ``failed`` with a 400, a bug ``failed`` with a 500
  (traceback logged), and the threads keep serving.
- Error messages never show the server's private temporary folder: a path inside it (an inline
  ``data:`` file, a download) is replaced by the media as the request named it.
- Pruned prefixes are reused across requests (:mod:`~vitcop_cli.serve.prefix_reuse`; ``config.prefix_cache_bytes``
  0: off, every request as before). After fetching the media the prepare thread looks the request up: a **hit**
  is not decoded at all (only its prompt's tokens are rendered) and the generation thread continues the
  cached prefix (``Session.answer(prefix=...)``: ``prefix.reused`` true, source "memory"); a **miss** is
  prepared and answered exactly as without a cache, and when its key was ``absent`` the prefix its answer
  built is cached before the answer is handed back (so the client's next turn finds it). Either way the
  answer is bit-identical to a fresh one. ``job.plan.lookup`` says what happened.
  With the disk tier (``--prefix-cache DIR``) a memory miss may be a **disk hit** (``"hit_disk"``: read in the
  prepare thread, answered like a hit with source "disk"), and a miss's prefix is written to the folder by the
  generation thread right after its answer was handed back (before the next job starts; a failed write is a
  log line, never the request's error).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import VitcopError
from ..result import AskResult
from .config import ServeConfig
from .errors import ApiError, from_library
from .media import Media, local_file
from .metrics import Metrics
from .prefix_reuse import PrefixPlan, PrefixReuse
from .request import ChatRequest, with_visual_kind
from .stopping import CancelFlag, StopStrings
from .text_stream import final_answer

log = logging.getLogger("vitcop.serve")


@dataclass
class Outcome:
    """A finished generation, as the handler renders it."""

    result: AskResult
    raw_text: str  # decoded generated tokens (skip_special_tokens), before stop / strip
    answer: str  # what the client gets: raw_text cut at a stop string, stripped
    finish_reason: str  # "stop" or "length"
    queue_s: float  # admission to generation start
    ttft_s: float  # admission to the end of the first forward (decode and preprocess are part of the queue)
    total_s: float  # admission to the end of generation


class Job:
    """One admitted request. ``events`` lives on ``loop``; everything else is guarded by the worker."""

    def __init__(self, request: ChatRequest, media: Media, loop: asyncio.AbstractEventLoop):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.request, self.media, self.loop = request, media, loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.cancel_reason: str | None = None
        self.admitted = time.perf_counter()
        self.state = "queued"  # queued -> preparing -> ready -> generating; closed once counted
        self.closed = False
        self.prepared = None
        self.decode_s = 0.0
        self.plan = PrefixPlan()  # its use of the prefix cache

    def push(self, kind: str, value=None) -> None:
        """Hand an event to the request handler (from any thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


class Worker:
    def __init__(self, session, config: ServeConfig, metrics: Metrics, tmp_dir: Path):
        self.session, self.config, self.metrics, self.tmp_dir = session, config, metrics, tmp_dir
        self.reuse = PrefixReuse(session, config, metrics)
        self.capacity = config.max_queue + 1
        self.accepting = True
        self._lock = threading.Lock()
        self._jobs: set[Job] = set()  # admitted and not yet counted
        self._generating: Job | None = None
        self._incoming: queue.Queue = queue.Queue()
        self._ready: queue.Queue = queue.Queue()
        self._ahead = threading.Semaphore(1)  # at most one prepared job waiting for the model
        self._threads = [
            threading.Thread(target=self._prepare_loop, name="vitcop-prepare", daemon=True),
            threading.Thread(target=self._generate_loop, name="vitcop-generate", daemon=True),
        ]

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        for t in self._threads:
            t.start()

    def begin_shutdown(self) -> None:
        """Stop admitting; cancel everything admitted (waiting jobs at once, the generating one at its next token)."""
        with self._lock:
            self.accepting = False
            jobs = list(self._jobs)
        for job in jobs:
            self.cancel(job, "shutdown")

    def close(self, timeout_s: float = 30.0) -> None:
        self.begin_shutdown()
        self._incoming.put(None)
        for t in self._threads:
            if t.is_alive():
                t.join(timeout_s)

    # ---- admission / cancellation -------------------------------------------------------------
    def submit(self, job: Job) -> bool:
        with self._lock:
            if not self.accepting:
                raise ApiError(503, "the server is shutting down", code="shutting_down")
            if len(self._jobs) >= self.capacity:
                return False
            self._jobs.add(job)
            self._gauges()
        self._incoming.put(job)
        return True

    def cancel(self, job: Job, reason: str) -> None:
        """Stop ``job`` for ``reason`` ("disconnect", "timeout", "shutdown"); a no-op once it has ended."""
        with self._lock:
            if job.closed or job.cancelled.is_set():
                return
            job.cancel_reason = reason
            job.cancelled.set()
            generating = job.state == "generating"
        if not generating:  # never reaches the model: free its slot now
            self._close(job, f"cancelled_{reason}")
            job.push("cancelled", reason)

    @property
    def in_system(self) -> int:
        with self._lock:
            return len(self._jobs)

    def _close(self, job: Job, outcome: str, tokens: int = 0) -> bool:
        with self._lock:
            if job.closed:
                return False
            job.closed = True
            self._jobs.discard(job)
            self._gauges()
        self.metrics.generations.labels(outcome).inc()
        self.metrics.generated_tokens.labels(outcome).inc(tokens)
        return True

    def _gauges(self) -> None:  # with the lock held
        busy = 1 if self._generating is not None else 0
        self.metrics.generating.set(busy)
        self.metrics.queue_depth.set(len(self._jobs) - busy)

    def _fail(self, job: Job, error: ApiError) -> None:
        if self._close(job, "failed"):
            job.push("error", error)

    # ---- threads --------------------------------------------------------------------------------
    def _prepare_loop(self) -> None:
        while True:
            job = self._incoming.get()
            if job is None:
                self._ready.put(None)
                return
            if job.cancelled.is_set():
                job.media.cleanup()
                continue
            self._ahead.acquire()
            if job.cancelled.is_set():  # cancelled while we waited for the model to take the previous one
                job.media.cleanup()
                self._ahead.release()
                continue
            with self._lock:
                job.state = "preparing"
            try:
                job.prepared = self._prepare(job)
            except ApiError as exc:
                self._ahead.release()
                self._fail(job, self._public(exc, job.media))
                continue
            except VitcopError as exc:
                self._ahead.release()
                self._fail(job, self._public(from_library(exc), job.media))
                continue
            except Exception as exc:  # noqa: BLE001 - a bug: log it, answer 500, keep serving
                log.exception("preparing %s failed", job.id)
                self._ahead.release()
                self._fail(job, ApiError(500, f"internal error while preparing the request ({type(exc).__name__})",
                                         code="internal_error"))
                continue
            finally:
                job.media.cleanup()
            with self._lock:
                job.state = "ready"
            self._ready.put(job)

    def _prepare(self, job: Job):
        req = job.request
        path = local_file(job.media, self.config, self.tmp_dir)
        if self.reuse.enabled:
            local = job.media.url is None and not job.media.temporary
            hit = self.reuse.lookup(job.plan, req, path, job.media.source, local)
            if hit is not None:
                return hit
        started = time.perf_counter()
        visual = self.session.load_visual(path, fps=req.fps, frames=req.frames, max_frames=self.config.max_frames,
                                          max_pixels=req.max_pixels, min_pixels=self.config.min_pixels,
                                          resize=self.config.resize, decoder=self.config.decoder,
                                          decode_device=self.config.decode_device)
        job.decode_s = time.perf_counter() - started
        visual = dataclasses.replace(visual, path=job.media.source)
        self.reuse.decoded(job.plan, path, visual)
        prepared = self.session.prepare_chat(visual, with_visual_kind(req.messages, visual.kind),
                                             max_pixels=req.max_pixels, min_pixels=self.config.min_pixels)
        prepared.visual.frames = prepared.visual.processed = None  # the processor's tensors are kept
        return prepared

    def _public(self, error: ApiError, media: Media) -> ApiError:
        """``error`` with every path inside the private temporary folder replaced by ``media.source``."""
        private = re.compile(re.escape(str(self.tmp_dir)) + r"[\w./-]*")
        source = media.source if len(media.source) <= 80 else media.source[:80] + "..."
        error.message = private.sub(lambda _: source, error.message)
        return error

    def _generate_loop(self) -> None:
        while True:
            job = self._ready.get()
            if job is None:
                return
            self._ahead.release()
            with self._lock:
                skip = job.cancelled.is_set()
                if not skip:
                    job.state = "generating"
                    self._generating = job
                    self._gauges()
            if skip:
                continue  # counted by cancel()
            try:
                self._generate(job)
            finally:
                job.prepared = None
                self.reuse.persist(job.plan)  # the disk tier, once the answer is out
                job.plan.release()
                with self._lock:
                    self._generating = None
                    self._gauges()

    def _generate(self, job: Job) -> None:
        req, session = job.request, self.session
        started = time.perf_counter()
        queue_s = started - job.admitted
        self.metrics.queue_wait.observe(queue_s)
        job.push("started")
        prompt_len = job.prepared.inputs["input_ids"].shape[1]
        criteria = [CancelFlag(job.cancelled)]
        if req.stop:
            criteria.append(StopStrings(session.processor.tokenizer, prompt_len, req.stop))
        options = {
            "max_new_tokens": req.max_tokens, "temperature": req.temperature, "top_p": req.top_p, "seed": req.seed,
            "video_decode_s": job.decode_s, "stopping_criteria": criteria,
            "on_text": (lambda piece: job.push("text", piece)) if req.stream else None,
        }
        try:
            result = self._answer(job, options)
        except VitcopError as exc:
            self._fail(job, from_library(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug: log it, answer 500, keep serving
            log.exception("generation of %s failed", job.id)
            self._fail(job, ApiError(500, f"internal error during generation ({type(exc).__name__})",
                                     code="internal_error"))
            return
        ended = time.perf_counter()
        tokens = len(result.generated_ids)
        if job.cancelled.is_set():
            self._close(job, f"cancelled_{job.cancel_reason}", tokens)
            job.push("cancelled", job.cancel_reason)
            return
        raw = session.processor.tokenizer.decode(result.generated_ids, skip_special_tokens=True)
        answer, stopped = final_answer(raw, req.stop)
        outcome = Outcome(
            result=result, raw_text=raw, answer=answer,
            finish_reason=self._finish_reason(result, req, stopped),
            queue_s=queue_s, ttft_s=queue_s + result.timings.model_ttft_s, total_s=ended - job.admitted,
        )
        m = self.metrics
        m.ttft.observe(outcome.ttft_s)
        m.prefill.observe(result.timings.prefill_s)
        m.latency.observe(outcome.total_s)
        before = result.tokens.visual
        after = result.pruning.layer_averaged_visual if result.pruning and result.pruning.n_visual else before
        m.visual_tokens.labels("before").observe(before)
        m.visual_tokens.labels("after").observe(after)
        self._close(job, "completed", tokens)
        job.push("done", outcome)

    def _answer(self, job: Job, options: dict) -> AskResult:
        """``job``'s answer: on its cached prefix (a hit); building a prefix to cache (an absent key); or as
        without a cache."""
        req, plan, session = job.request, job.plan, self.session
        if plan.clip is not None:
            clip = plan.clip
            return session.answer(job.prepared, preset=clip.preset, method=clip.method, prefix=clip.prefix,
                                  source=plan.source, **options)[0]
        if plan.key is None:
            return session.generate(job.prepared, preset=req.preset, method=req.method, **options)
        result, kept = session.answer(job.prepared, preset=plan.preset, method=req.method, **options)
        self.reuse.keep(plan, kept, req)
        return result

    def _finish_reason(self, result: AskResult, req: ChatRequest, stopped: bool) -> str:
        ids = result.generated_ids
        if stopped or len(ids) < req.max_tokens:
            return "stop"
        eos = self.session.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        return "stop" if ids and ids[-1] in eos else "length"
