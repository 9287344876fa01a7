"""Running a batch: plan, this rank's share through the model, part file, merge, summary.

Contract (the package docstring gives the whole picture):

- Output. One JSON line per job: ``AskResult.to_dict()`` (what ``ask --json`` prints) plus
  ``id``, ``video`` (resolved absolute path), ``question`` (the item's question), ``prompt`` (the
  text sent: for multiple choice, question + options + instruction; ``ask``'s own ``question``
  field), ``options``, ``expected`` (the gold answer: a letter for multiple choice; named so
  because ``answer`` is the model's answer), ``predicted`` (the parsed letter), ``correct`` and
  ``error`` (see :func:`vitcop_cli.questions.scoring.score`). ``model`` is :func:`vitcop_cli.api.model_identity`,
  ``preset`` the preset's label, ``method`` ``"none"`` for the unpruned preset (:mod:`.plan`). A
  failed job has ``error`` set to a one-line message and every other result field ``null``,
  except the key fields.
- Steps. Check the options, the presets' layers and ``max_new_tokens`` against the model
  (:func:`check_presets_fit`, ``session.check_lengths``: an :class:`InputError` before anything is
  written). Take the ``--out`` lock (rank 0, unless the caller holds it: :mod:`.lock`); rank 0
  merges what earlier runs left (:func:`.merge.merge`); every rank plans the same pending jobs from
  ``--out`` and runs its share (:func:`.plan.shares`), appending each line, fsync'd, to its part
  file before the next job starts, so a crash or kill loses at most the job in flight; rank 0
  waits for every rank, merges the parts into ``--out`` and returns the summary. Under torchrun the
  steps are agreed between ranks (:class:`.dist.DistContext`); other ranks return their own counts.
  Rank 0's wait has its own timeout (:func:`.dist.wait_for_ranks`): when no rank has written a job
  or finished for ``VITCOP_DIST_TIMEOUT`` seconds (a rank alive but hung), it raises
  :class:`RuntimeFailure`; the part files stay and the next run resumes from them.
- Resume. Keys with a successful line are skipped; failed keys are retried by default (the new
  line replaces the error line at the merge); ``retry_failed=False`` (``--skip-failed``) leaves
  them alone. Generation options (frames, tokens, temperature, ...) are not part of the key: use
  another ``--out`` when changing them. An input item repeating an earlier (video, prompt) is run
  once (``duplicates``).
- Prefetch. With ``prefetch=True`` a background thread decodes (:func:`load_visual`) and
  preprocesses (``Session.prepare``) the next item while the current one generates, one item
  ahead at most (:mod:`.prefetch`). Decoded frames are dropped once prepared; consecutive items on
  the same clip decode it once (``video_decode_s`` is then 0).
- Prefix reuse (:mod:`.reuse`). Every answer runs on a pruned prefix (system prompt + visual,
  prefilled under the preset): ``Session.answer`` returns it, and it is kept for the next job on the
  same clip under the same (preset, method) (the other options are the run's own), which is handed it
  (``prefix=``) with a tokens-only prompt: its decode, preprocess, vision encoder and prefix prefill
  are skipped, and its tokens are bit-identical to a fresh answer's. Its line says
  ``prefix.reused = true`` and ``prefix.saved_s``. Only the current clip's prefixes are held (one per
  (preset, method)); they are dropped when the next item is on another clip, so items on one clip
  that are not consecutive in the input (or in this rank's share) each build their own. A prefix that
  does not cover the prompt (``PrefixMiss``), or a job with none kept (the job before it failed), is
  prepared in full and answered afresh. FastV reads the question: nothing is kept.
- Disk tier (``prefix_store``, ``--prefix-cache DIR``; :mod:`.disk`). A clip's first job per (preset, method)
  (no prefix kept in memory for it) is looked up in the store, ahead, where the clip is prepared, under a key of
  the media's content (SHA-256), the model's identity and the run's options: a hit answers on the stored prefix
  (tokens-only prompt; ``prefix.source = "disk"``, ``reused = true``; counted with the reuses) and is kept in
  memory for the clip's next jobs; a miss answers as without a store and saves the prefix it built. A clip whose
  every first job is a hit is not decoded. A store file that cannot be used is a miss with one line in that
  result's ``warnings``; a save that fails is a warning: the cache never fails a line. Ranks may share DIR (the
  store's writes are atomic).
- Summary. Counts are for this run, all ranks (``ok``, ``failed``, ``skipped`` = already done,
  ``skipped_failed`` = earlier failures left alone, ``prefix_reuses`` / ``prefix_saved_s`` = answers
  on a reused prefix and the time that saved); the figures cover every result of the input's jobs,
  earlier runs' included (:mod:`.summary`).
- Interruption. A ``KeyboardInterrupt`` (Ctrl-C; SIGTERM / SIGHUP as
  :class:`vitcop_cli.cli.signals.Terminated`; or raised by ``on_progress``) abandons the job in flight
  without waiting for the prefetch thread; a single process then merges what it wrote. It is
  re-raised as :class:`BatchInterrupted` carrying the partial summary and the cause.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import InputError, PrefixMiss, VitcopError
from ..options import check_run_options
from ..questions.inputs import BatchItem, items_from_folder, items_from_jsonl, printable, read_folder, read_jsonl
from ..questions.scoring import MC_INSTRUCTION, gold_letter, mc_prompt, parse_letter, score
from ..result import AskResult
from . import merge as merging
from .clips import ClipInput, Clips
from .disk import DiskPrefixes
from .dist import wait_for_ranks
from .lock import OutLock
from .plan import NO_METHOD, combos, job_key, plan, shares
from .prefetch import Inline, Prefetcher
from .progress import BatchProgress, Tracker
from .request import check_request
from .reuse import ClipPrefixes, expected_reuse
from .store import Key, PartWriter, check_out_path, load_done_keys, read_results, record_key, scan
from .summary import BatchSummary, GroupSummary, ResultStats, _stats, aggregate

__all__ = [
    "MC_INSTRUCTION",
    "NO_METHOD",
    "BatchInterrupted",
    "BatchItem",
    "BatchProgress",
    "BatchSummary",
    "GroupSummary",
    "Key",
    "OutLock",
    "ResultStats",
    "aggregate",
    "check_out_path",
    "check_presets_fit",
    "check_run_options",
    "gold_letter",
    "items_from_folder",
    "items_from_jsonl",
    "load_done_keys",
    "mc_prompt",
    "parse_letter",
    "printable",
    "read_folder",
    "read_jsonl",
    "read_results",
    "record_key",
    "run_batch",
]

_ERROR_LIMIT = 500
_POLL_S = 0.2


class BatchInterrupted(KeyboardInterrupt):
    """The batch was interrupted; ``summary`` covers what was written before, ``cause`` is the interruption."""

    def __init__(self, summary: BatchSummary, cause: BaseException | None = None):
        super().__init__("batch interrupted")
        self.summary = summary
        self.cause = cause


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    msg = text if isinstance(exc, VitcopError) and text else f"{type(exc).__name__}: {text}".rstrip(": ")
    return msg if len(msg) <= _ERROR_LIMIT else msg[: _ERROR_LIMIT - 3] + "..."


_ASK_FIELDS = [f.name for f in dataclasses.fields(AskResult)]
#: every output line, result or error, carries this (the ``ask --json`` fields it embeds are vitcop.ask/2's)
SCHEMA = "vitcop.batch/2"  # /2: the embedded timings.ttft_s includes video decode and preprocess


def _record(item: BatchItem, model: str, preset: str, method: str, result: AskResult | None, error: str | None) -> dict:
    """One output line. ``id`` must stay the first key: ``store._RECORD_START`` relies on it."""
    if result is not None:
        ask = result.to_dict()
        predicted, correct = score(item, result.answer)
    else:
        ask = {name: None for name in _ASK_FIELDS}
        predicted = correct = None
    ask.update(model=model, preset=preset, method=method)  # the key: what ran, named by identity
    ask.pop("question", None)
    ask.pop("schema", None)
    rec = {
        "id": item.id,
        "schema": SCHEMA,
        "video": item.video,
        "question": item.question,
        "prompt": item.prompt,
        "options": item.options,
        "expected": item.expected,
    }
    rec.update(ask)
    rec.update(predicted=predicted, correct=correct, error=error)
    return rec


def _layout(session) -> tuple[int, list[str] | None] | None:
    """(decoder layers, a hybrid LLM's layer types or None) of ``session``'s model."""
    from pruning import compat

    config = getattr(getattr(session, "model", None), "config", None)
    try:
        types = compat.layer_types(config)
        return int(config.get_text_config().num_hidden_layers), types if "linear_attention" in types else None
    except (AttributeError, TypeError, ValueError):
        return None  # not a transformers model (a scripted session): nothing to check


def check_presets_fit(session, presets: Sequence) -> None:
    """InputError (exit 2), once, when a preset's layers do not fit ``session``'s LLM depth (on a hybrid
    model: its full-attention layers, where the cuts snap to)."""
    from pruning.presets import PresetError

    layout = _layout(session)
    if layout is None:
        return
    for p in presets:
        if p.is_identity:
            continue
        try:
            p.resolve_layers(*layout)
        except PresetError as exc:
            raise InputError(f"--preset {p.label} does not fit this model: {exc}") from None


def _identity(name: str) -> str:
    from ..api import model_identity

    return model_identity(name)


@dataclass
class _Run:
    """One run's state once planned: what :func:`run_batch`'s steps share."""

    session: object
    out: Path
    model: str
    jobs: list
    ctx: object  # DistContext or None
    started: float
    prefetch: bool
    generation: dict  # session.generate keywords shared by every job
    method: str  # the method the preset none runs under
    plan: object = None  # plan.Plan
    torn: int = 0
    tracker: Tracker | None = None
    clips: Clips | None = None
    prefixes: ClipPrefixes | None = None  # the current clip's kept prefixes (None: no reuse)
    disk: DiskPrefixes | None = None  # the on-disk tier (--prefix-cache), or None

    @property
    def rank(self) -> int:
        return 0 if self.ctx is None else self.ctx.rank

    @property
    def world(self) -> int:
        return 1 if self.ctx is None else self.ctx.world

    def summary(self, interrupted: bool, merged=None) -> BatchSummary:
        """The run's summary: this run's counts (from the merge when there was one), every result's figures."""
        p, model = self.plan, self.model
        rows = dict(p.done)
        if merged is not None:
            rows.update(merged.rows)
            ok, failed = sum(merged.part_ok.values()), sum(merged.part_failed.values())
            per_group = {(m, pr, "ok"): n for (m, pr), n in merged.part_ok.items()}
            per_group.update({(m, pr, "failed"): n for (m, pr), n in merged.part_failed.items()})
            per_group.update({(m, pr, "reused"): n for (m, pr), n in merged.part_reused.items()})
            saved = merged.part_saved_s
        else:  # this rank's reuses (another rank's are in its part file)
            _, ok, failed = self.tracker.counts()
            per_group, saved = self.tracker.groups, self.tracker.saved_s
        groups, everything = [], []
        for m, pr in self.jobs:
            group_rows = [rows[k] for k in (job_key(i, model, pr, m) for i in p.items) if k in rows]
            everything.extend(group_rows)
            earlier = [r for i in p.items if (r := p.done.get(job_key(i, model, pr, m))) is not None]
            groups.append(GroupSummary(
                method=m, preset=pr.label, jobs=len(p.items), ok=per_group.get((m, pr.label, "ok"), 0),
                failed=per_group.get((m, pr.label, "failed"), 0), skipped=sum(1 for r in earlier if r.error is None),
                skipped_failed=sum(1 for r in earlier if r.error is not None),
                prefix_reuses=per_group.get((m, pr.label, "reused"), 0),
                prefix_saved_s=float(saved.get((m, pr.label), 0.0)), **asdict(_stats(group_rows)),
            ))
        n_jobs = len(p.items) * len(self.jobs)
        reuses, saved_s = sum(g.prefix_reuses for g in groups), sum(g.prefix_saved_s for g in groups)
        overall = GroupSummary(method="all", preset="all", jobs=n_jobs, ok=ok, failed=failed, skipped=p.skipped,
                               skipped_failed=p.skipped_failed, prefix_reuses=reuses, prefix_saved_s=saved_s,
                               **asdict(_stats(everything)))
        return BatchSummary(
            out=str(self.out), model=model, items=len(p.items), jobs=n_jobs, ok=ok, failed=failed,
            skipped=p.skipped, skipped_failed=p.skipped_failed, duplicates=p.duplicates, torn_bytes=self.torn,
            wall_s=time.perf_counter() - self.started, prefetch=self.prefetch, interrupted=interrupted,
            groups=groups, overall=overall, ranks=self.world, prefix_reuses=reuses, prefix_saved_s=saved_s,
        )

    def answer(self, writer: PartWriter, entry, value: ClipInput | None, exc) -> None:
        """Every (method, preset) job of one prepared item, each line written before the next job starts."""
        item = entry.item
        if self.prefixes is not None:
            self.prefixes.enter(item.video)  # another clip: its prefixes are let go before this one runs
        for m, pr in entry.todo:
            result, error, failure = None, None, exc
            if failure is None:
                try:
                    result = self._one(item, value, pr, self.method if m == NO_METHOD else m, (m, pr.label))
                except Exception as gen_exc:  # noqa: BLE001 - recorded, the batch goes on
                    failure = gen_exc
            if failure is not None:
                error = _one_line(failure)
            writer.append(_record(item, self.model, pr.label, m, result, error))
            info = None if result is None else result.prefix
            self.tracker.job(item, m, pr.label, error, failure, reused=bool(info is not None and info.reused),
                             saved_s=info.saved_s if info is not None and info.reused else 0.0)

    def _one(self, item, value: ClipInput, preset, method: str, job: tuple) -> AskResult:
        """One job: on the clip's kept prefix for (preset, method) when there is one, else on the store's
        (``--prefix-cache``), else afresh (a prefix built with a store is saved there); the prefix it ran on is
        kept for the next job (see the module docstring)."""
        options = dict(preset=preset, method=method, video_decode_s=value.decode_s, **self.generation)
        kept = None if self.prefixes is None else self.prefixes.get(item.video, preset.label, method)
        disk = value.disk
        if kept is None and disk is not None and job in disk.hits:
            kept, options["source"] = disk.hits.pop(job), "disk"
            options["video_decode_s"] += disk.seconds.get(job, 0.0)  # hashing the clip, reading the file
        if kept is not None and value.prompt is not None:
            try:
                result, kept = self.session.answer(value.prompt, prefix=kept, **options)
            except PrefixMiss:  # not covered after all: with its pixels, afresh (the line says why in prefix.reason)
                result, kept = self.session.answer(self.clips.full(value, item), prefix=kept, **options)
        else:
            result, kept = self.session.answer(self.clips.full(value, item), prefix=kept, **options)
        if disk is not None:
            result.warnings += disk.warnings.pop(job, [])
            if result.prefix is not None and result.prefix.source == "built":
                result.warnings += self.disk.save(disk, job, kept, value.meta)
        if self.prefixes is not None:
            self.prefixes.keep(item.video, preset.label, method, kept)
        return result

    def execute(self, mine, clips: Clips) -> BatchSummary:
        """This rank's share through the model, then (rank 0) the wait for the others and the merge."""
        feeder = writer = None
        try:
            self.tracker.emit("start")
            writer = PartWriter(merging.part_path(self.out, self.rank))
            feeder = Prefetcher(clips, mine) if self.prefetch else Inline(clips, mine)
            for entry, value, exc in feeder:
                self.answer(writer, entry, value, exc)
            feeder.close(wait=True)
            writer.close()
            if self.ctx is not None:
                self.ctx.finish()
                if self.rank != 0:
                    return self.summary(False)
                # the other ranks' shares: torchrun stops us all if one dies; a hung one trips the timeout
                wait_for_ranks(self.ctx, lambda: self.tracker.emit("tick"), poll_s=_POLL_S, where=printable(self.out))
            merged = merging.merge(self.out)
            self.tracker.emit("tick")
            return self.summary(False, merged)
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM / SIGHUP (signals.Terminated), or on_progress
            if feeder is not None:
                feeder.close(wait=False)  # never wait for a decode in flight
            if writer is not None:
                writer.close()
            raise BatchInterrupted(self.summary(True, self._merge_after_interrupt()), exc) from None
        finally:
            if writer is not None:
                writer.close()
            if self.prefixes is not None:
                self.prefixes.clear()  # the last clip's prefixes: nothing outlives the run

    def _merge_after_interrupt(self):
        if self.ctx is not None:
            return None  # the parts stay; the next run merges them
        try:
            return merging.merge(self.out)  # a single process leaves one tidy file
        except (KeyboardInterrupt, VitcopError):
            return None  # the parts stay; the next run merges them


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
    seed: int | None = None,
    prefetch: bool = True,
    retry_failed: bool = True,
    on_progress: Callable[[BatchProgress], None] | None = None,
    dist=None,
    lock: OutLock | None = None,
    resize: str = "fast",
    decoder: str | None = None,
    decode_device: str = "cpu",
    reuse_prefixes: bool = True,
    prefix_store=None,
) -> BatchSummary:
    """Run every item under every (method, preset) on ``session``; results end up in ``out_path``.

    See the module docstring for the output, resume and summary rules. Bad options (a preset that
    does not fit the model, a ``max_new_tokens`` over its maximum positions) raise :class:`InputError`
    before the output is touched; a failing clip or generation becomes an ``error`` line and the
    batch goes on; failing to write raises :class:`RuntimeFailure`; an interruption raises
    :class:`BatchInterrupted`. ``resize`` / ``decoder`` / ``decode_device``: how clips are decoded
    (``Session.load_visual``). ``dist`` is the :class:`~.dist.DistContext` of a torchrun job (``None``: this process does everything).
    ``lock``: an :class:`OutLock` already held on ``out_path`` (else rank 0 takes one).
    ``reuse_prefixes``: internal, for benchmarks and tests only (no CLI option): ``False`` answers every job
    afresh (its full inputs prepared, its prefix built for it alone), as batch did before prefix reuse; the
    answers are the same either way (and ``prefix_store`` is not used).
    ``prefix_store``: a :class:`~vitcop_cli.session.prefix_store.PrefixStore` (``--prefix-cache DIR``): each
    clip's first job per (preset, method) reads its pruned prefix from it when there (``prefix.source ==
    "disk"``), else saves the prefix it builds (see the module docstring, :mod:`.disk`). Ranks may share it.

    Steps: check (:func:`.request.check_request`, the presets against the model, the lengths), recover what
    earlier runs left (rank 0), plan this rank's share, run it (:meth:`_Run.execute`).
    """
    started = time.perf_counter()
    loaded, method_list, out = check_request(
        presets, methods, out_path, fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels,
        min_pixels=min_pixels, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, resize=resize,
        decoder=decoder, decode_device=decode_device,
    )
    check_presets_fit(session, loaded)
    session.check_lengths(max_new_tokens)  # max_new_tokens alone over the positions: once, up front
    run = _Run(session=session, out=out, model=_identity(session.name), jobs=combos(loaded, method_list), ctx=dist,
               started=started, prefetch=prefetch, method=method_list[0],
               generation=dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed))
    held = [lock]
    own_lock = run.rank == 0 and lock is None
    try:
        earlier = _recover(run, held if own_lock else None)
        run.plan = plan(items, run.jobs, run.model, earlier, retry_failed=retry_failed)
        del earlier
        mine = shares(run.plan.pending, run.world, frames=frames, max_frames=max_frames)[run.rank]
        total = sum(len(x.todo) for x in run.plan.pending)
        run.tracker = Tracker(dist, total, run.plan.skipped, run.plan.skipped_failed, started, on_progress)
        sizes = dict(max_pixels=max_pixels, min_pixels=min_pixels)
        sampling = dict(fps=fps, frames=frames, max_frames=max_frames, resize=resize, decoder=decoder,
                        decode_device=decode_device)
        expect = None
        def keeps(m):
            return _keeps_prefix(run.method if m == NO_METHOD else m)

        if reuse_prefixes:
            run.prefixes = ClipPrefixes(run.model, dict(system=system, **sampling, **sizes))
            expect = expected_reuse(mine, keeps)
            if prefix_store is not None:
                run.disk = DiskPrefixes(session, prefix_store, dict(system=system, **sampling, **sizes),
                                        lambda m: run.method if m == NO_METHOD else m, keeps)
        run.clips = Clips(session, mine, dict(**sampling, **sizes), dict(system=system, **sizes), expect, run.disk)
        return run.execute(mine, run.clips)
    finally:
        if own_lock and held[0] is not None:
            held[0].release()


def _keeps_prefix(method: str) -> bool:
    """Whether answers under ``method`` run on a kept prefix (its choice never reads the question)."""
    from pruning.methods import method_class

    return method_class(method).question_independent


def _recover(run: _Run, held: list | None) -> dict:
    """Earlier results: rank 0 merges what earlier runs left (``--out`` and part files, any rank count) and
    returns its rows; other ranks read ``--out``. ``held``: a one-slot list that receives the ``--out`` lock
    rank 0 takes inside the agreed step (so a refusal ends every rank, not just rank 0)."""

    def recover():
        if run.rank != 0:
            return None
        if held is not None:
            held[0] = OutLock(run.out)
        return merging.merge(run.out, guard_foreign=True)

    recovered = recover() if run.ctx is None else run.ctx.agree("merging earlier results", recover)
    if run.rank != 0:
        return scan([run.out])
    run.torn = recovered.torn_bytes
    return recovered.rows
