"""``vitcop batch``: many (clip, question) items through one loaded model, into a resumable JSONL file.

This module runs the batch. Its parts state their own contracts and their public names are
re-exported here: :mod:`~vitcop_cli.batch_inputs` (items, multiple choice, scoring),
:mod:`~vitcop_cli.batch_store` (the results file), :mod:`~vitcop_cli.batch_summary` (the figures),
:mod:`~vitcop_cli.options` (option validation).

Contract:

- Output. One JSON line per (item, method, preset) job: ``AskResult.to_dict()`` (what ``ask --json``
  prints) plus ``id``, ``video`` (resolved absolute path), ``question`` (the item's question),
  ``prompt`` (the text sent: for multiple choice, question + options + instruction; ``ask``'s own
  ``question`` field), ``options``, ``expected`` (the gold answer: a letter for multiple choice; named
  so because ``answer`` is the model's answer), ``predicted`` (the parsed letter), ``correct`` and
  ``error`` (see :func:`~vitcop_cli.batch_inputs._score`). A failed job has ``error`` set to a
  one-line message and every other result field ``null``, except the key fields. Each line is
  written and ``fsync``'d before the next job starts, so a crash or kill loses at most the job in
  flight.
- Resume. Jobs are keyed by ``(video, prompt, model, preset, method)`` (:data:`Key`): resolved
  absolute clip path, text sent, ``--model`` string as given, preset name, method. Generation
  options (frames, tokens, temperature, ...) are not part of the key: use another ``--out`` when
  changing them. On start, a torn last line of ours is cut off, and every key with a successful
  line is skipped. A non-empty ``out`` holding no result line is refused (:class:`InputError`), so a
  wrong ``--out`` never damages another file. Failed keys are retried by default (the new line
  supersedes the earlier error line, which stays in the file); ``retry_failed=False``
  (``--skip-failed``) leaves them alone. A key never gets two successful lines: resumed keys are
  skipped and an input item repeating an earlier (video, prompt) is run once (``duplicates``). An
  exclusive ``flock`` on the output stops two batches from appending to the same file.
- Prefetch. With ``prefetch=True`` a background thread decodes (:func:`load_visual`) and preprocesses
  (``Session.prepare``) the next item while the current one generates, one item ahead at most.
  The decoded frames of an item are dropped once it is prepared (the processor's tensors are kept);
  consecutive items on the same clip decode it once (``video_decode_s`` is then 0).
- Summary. Counts are for this run (``ok``, ``failed``, ``skipped`` = already done, ``skipped_failed``
  = earlier failures left alone); the figures cover every successful result of the input's jobs,
  including those from earlier runs (:mod:`~vitcop_cli.batch_summary`).
- Interruption. A ``KeyboardInterrupt`` (Ctrl-C, or raised by ``on_progress``) stops the batch after
  the lines already written; it is re-raised as :class:`BatchInterrupted` carrying the partial
  summary.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from .batch_inputs import (
    MC_INSTRUCTION,
    BatchItem,
    _score,
    gold_letter,
    items_from_folder,
    items_from_jsonl,
    mc_prompt,
    parse_letter,
)
from .batch_store import Key, _Output, _row, _scan, check_out_path, load_done_keys, read_results, record_key
from .batch_summary import BatchSummary, GroupSummary, ResultStats, _stats, aggregate
from .errors import InputError, VitcopError
from .options import check_run_options
from .result import AskResult

__all__ = [
    "MC_INSTRUCTION",
    "BatchInterrupted",
    "BatchItem",
    "BatchProgress",
    "BatchSummary",
    "GroupSummary",
    "Key",
    "ResultStats",
    "aggregate",
    "check_out_path",
    "check_run_options",
    "gold_letter",
    "items_from_folder",
    "items_from_jsonl",
    "load_done_keys",
    "mc_prompt",
    "parse_letter",
    "read_results",
    "record_key",
    "run_batch",
]

_ERROR_LIMIT = 500


class BatchInterrupted(KeyboardInterrupt):
    """The batch was interrupted; ``summary`` covers what was written before."""

    def __init__(self, summary: BatchSummary):
        super().__init__("batch interrupted")
        self.summary = summary


@dataclass
class BatchProgress:
    """Passed to ``on_progress`` once before the first job (``done == 0``) and after every job written."""

    done: int
    total: int  # jobs to run in this run (skipped ones excluded)
    ok: int
    failed: int
    skipped: int
    skipped_failed: int
    elapsed_s: float
    item: BatchItem | None = None  # the job just written (None for the first call)
    preset: str | None = None
    method: str | None = None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    msg = text if isinstance(exc, VitcopError) and text else f"{type(exc).__name__}: {text}".rstrip(": ")
    return msg if len(msg) <= _ERROR_LIMIT else msg[: _ERROR_LIMIT - 3] + "..."


_ASK_FIELDS = [f.name for f in dataclasses.fields(AskResult)]


def _record(item: BatchItem, model: str, preset: str, method: str, result: AskResult | None, error: str | None) -> dict:
    """One output line. ``id`` must stay the first key: ``batch_store._RECORD_START`` relies on it."""
    if result is not None:
        ask = result.to_dict()
        predicted, correct = _score(item, result.answer)
    else:
        ask = {name: None for name in _ASK_FIELDS}
        ask.update(model=model, preset=preset, method=method)
        predicted = correct = None
    ask.pop("question", None)
    rec = {
        "id": item.id,
        "video": item.video,
        "question": item.question,
        "prompt": item.prompt,
        "options": item.options,
        "expected": item.expected,
    }
    rec.update(ask)
    rec.update(predicted=predicted, correct=correct, error=error)
    return rec


_DONE = object()


class _Prefetcher:
    """``fn(x)`` for each x of ``xs`` in a background thread, at most ``depth`` items ahead of the consumer.

    Iterating yields ``(x, value, exception)`` in order. A slot is given back when the consumer takes
    an item, so with ``depth=1`` the thread prepares item i+1 while the consumer works on item i.
    """

    def __init__(self, fn: Callable, xs: Sequence, depth: int = 1):
        self._fn, self._xs = fn, list(xs)
        self._queue: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vitcop-batch-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for x in self._xs:
                while not self._slots.acquire(timeout=0.1):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                try:
                    self._queue.put((x, self._fn(x), None))
                except Exception as exc:  # noqa: BLE001 - becomes the item's error line
                    self._queue.put((x, None, exc))
        except BaseException as exc:  # noqa: BLE001 - hand anything else to the consumer
            self._queue.put(("__raise__", None, exc))
        finally:
            self._queue.put(_DONE)

    def __iter__(self):
        while True:
            got = self._queue.get()
            if got is _DONE:
                return
            if got[0] == "__raise__":
                raise got[2]
            self._slots.release()
            yield got

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


class _Inline:
    """The same interface, no thread: ``fn(x)`` when the consumer asks for the item."""

    def __init__(self, fn: Callable, xs: Sequence):
        self._fn, self._xs = fn, list(xs)

    def __iter__(self):
        for x in self._xs:
            try:
                yield x, self._fn(x), None
            except Exception as exc:  # noqa: BLE001
                yield x, None, exc

    def close(self, timeout: float = 0.0) -> None:
        pass


def run_batch(
    session,
    items: Sequence[BatchItem],
    out_path: str | os.PathLike,
    *,
    presets: Sequence[str] = ("1_3",),
    methods: Sequence[str] = ("vitcop",),
    fps: float | None = None,
    frames: int | None = None,
    max_frames: int = 768,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
    system: str | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float | None = None,
    prefetch: bool = True,
    retry_failed: bool = True,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> BatchSummary:
    """Run every item under every (method, preset) on ``session``, appending one line per job to ``out_path``.

    See the module docstring for the output, resume and summary rules. Bad options raise
    :class:`InputError` before the output is touched; a failing clip or generation becomes an
    ``error`` line and the batch goes on; failing to write the output raises
    :class:`RuntimeFailure`; an interruption raises :class:`BatchInterrupted`.
    """
    from .video import load_visual

    started = time.perf_counter()
    loaded, method_list = check_run_options(
        presets, methods, fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels,
        min_pixels=min_pixels, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
    )
    out = check_out_path(out_path)
    model = session.name
    combos = [(m, p) for m in method_list for p in loaded]

    output = _Output(out)
    try:
        earlier, torn, torn_is_ours = _scan(out)
        size = os.fstat(output.fd).st_size
        if size and not earlier and not (torn == size and torn_is_ours):
            raise InputError(
                f"--out {out} already holds something other than vitcop batch results; "
                "give a new file, or the output of an earlier batch to resume it"
            )
        if torn_is_ours:
            output.cut_torn_tail(torn)  # the line in flight when a run was killed
        elif torn:
            output.end_line()  # not ours: keep the bytes, start on a new line
            torn = 0

        # Plan: which jobs of which items run now.
        unique_items: list[BatchItem] = []
        seen_items: set = set()
        duplicates = 0
        for item in items:
            ident = (item.video, item.prompt)
            if ident in seen_items:
                duplicates += 1
                continue
            seen_items.add(ident)
            unique_items.append(item)
        groups = {(m, p.name): GroupSummary(method=m, preset=p.name, jobs=len(unique_items)) for m, p in combos}
        final: dict = {}  # (group, key) -> _Row, for the stats
        pending: list[tuple[BatchItem, list]] = []
        skipped = skipped_failed = 0
        for item in unique_items:
            todo = []
            for m, p in combos:
                key = (item.video, item.prompt, model, p.name, m)
                row = earlier.get(key)
                g = groups[(m, p.name)]
                if row is not None and row.error is None:
                    skipped += 1
                    g.skipped += 1
                    final[key] = row
                elif row is not None and not retry_failed:
                    skipped_failed += 1
                    g.skipped_failed += 1
                    final[key] = row
                else:
                    todo.append((m, p))
            if todo:
                pending.append((item, todo))
        del earlier
        total = sum(len(todo) for _, todo in pending)
        counts = {"done": 0, "ok": 0, "failed": 0}

        def progress(item=None, preset=None, method=None, error=None, exception=None) -> None:
            if on_progress is not None:
                on_progress(
                    BatchProgress(
                        done=counts["done"], total=total, ok=counts["ok"], failed=counts["failed"],
                        skipped=skipped, skipped_failed=skipped_failed, elapsed_s=time.perf_counter() - started,
                        item=item, preset=preset, method=method, error=error, exception=exception,
                    )
                )

        def summary(interrupted: bool) -> BatchSummary:
            for (m, pname), g in groups.items():
                rows = [row for key, row in final.items() if key[3] == pname and key[4] == m]
                for name, value in asdict(_stats(rows)).items():
                    setattr(g, name, value)
            overall = GroupSummary(
                method="all", preset="all", jobs=len(unique_items) * len(combos), ok=counts["ok"],
                failed=counts["failed"], skipped=skipped, skipped_failed=skipped_failed,
                **asdict(_stats(final.values())),
            )
            return BatchSummary(
                out=str(out), model=model, items=len(unique_items), jobs=len(unique_items) * len(combos),
                ok=counts["ok"], failed=counts["failed"], skipped=skipped, skipped_failed=skipped_failed,
                duplicates=duplicates, torn_bytes=torn, wall_s=time.perf_counter() - started, prefetch=prefetch,
                interrupted=interrupted, groups=list(groups.values()), overall=overall,
            )

        # Decode + prepare (in the prefetch thread when asked), one item ahead.
        next_video = {id(pending[i][0]): pending[i + 1][0].video for i in range(len(pending) - 1)}
        cache: dict = {}

        def prepare(entry):
            item = entry[0]
            if cache.get("video") == item.video:
                visual, decode_s, failure = cache["visual"], 0.0, cache["failure"]
            else:
                cache.clear()
                t0 = time.perf_counter()
                try:
                    visual, failure = load_visual(item.video, fps=2.0 if fps is None else fps, frames=frames,
                                                  max_frames=max_frames), None
                except Exception as exc:  # noqa: BLE001
                    visual, failure = None, exc
                decode_s = time.perf_counter() - t0
                if next_video.get(id(item)) == item.video:  # keep the frames for the next item only
                    cache.update(video=item.video, visual=visual, failure=failure)
            if failure is not None:
                raise failure
            prepared = session.prepare(visual, item.prompt, system=system, max_pixels=max_pixels, min_pixels=min_pixels)
            prepared.visual = dataclasses.replace(visual, frames=None)  # the processor's tensors are all we need
            if next_video.get(id(item)) != item.video:
                cache.clear()
            return prepared, decode_s

        feeder = None
        try:
            progress()
            feeder = _Prefetcher(prepare, pending) if prefetch else _Inline(prepare, pending)
            for (item, todo), value, exc in feeder:
                for m, p in todo:
                    key = (item.video, item.prompt, model, p.name, m)
                    result, error, failure = None, None, exc
                    if failure is None:
                        prepared, decode_s = value
                        try:
                            result = session.generate(
                                prepared, preset=p, method=m, max_new_tokens=max_new_tokens,
                                temperature=temperature, top_p=top_p, video_decode_s=decode_s,
                            )
                        except Exception as gen_exc:  # noqa: BLE001 - recorded, the batch goes on
                            failure = gen_exc
                    if failure is not None:
                        error = _one_line(failure)
                    rec = _record(item, model, p.name, m, result, error)
                    output.append(rec)
                    final[key] = _row(rec)
                    g = groups[(m, p.name)]
                    counts["done"] += 1
                    if error is None:
                        counts["ok"] += 1
                        g.ok += 1
                    else:
                        counts["failed"] += 1
                        g.failed += 1
                    progress(item, p.name, m, error, failure)
        except KeyboardInterrupt:
            raise BatchInterrupted(summary(True)) from None
        finally:
            if feeder is not None:
                feeder.close()
        return summary(False)
    finally:
        output.close()
