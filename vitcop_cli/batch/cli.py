"""The ``vitcop batch`` command (registered on the CLI app by :mod:`vitcop_cli.app`): parse, validate,
load the model once (on every rank under torchrun), run :func:`vitcop_cli.batch.run_batch`, render.

Contract: bad options, inputs or ``--out`` fail with one line and exit 2 before a model loads; the
``--out`` lock is taken before the model loads; ``--nproc N`` starts torchrun itself
(:mod:`.launch`). Exit status: 0 when every job succeeded, 1 when some failed, 2 usage errors,
130 / 143 / 129 after Ctrl-C / SIGTERM / SIGHUP (the results so far are on disk; the same command
resumes). Importing this module is cheap (no torch).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..cli import option_types as o
from ..cli.common import check_prefix_cache, fail, prefix_store, state
from ..errors import InputError, VitcopError


def batch_cmd(
    ctx: typer.Context,
    input: Path = typer.Argument(  # noqa: A002 - named for the usage line
        ..., help="A folder (searched recursively for videos and images) or a JSONL questions file. "
        "Images up to 50 megapixels, aspect ratios up to 200:1 (else that item's error line)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o",
        help="JSONL file the results go to; run again with the same --out to resume. A symbolic link is followed.",
    ),
    question: Optional[list[str]] = typer.Option(
        None, "--question", "-q", metavar="TEXT",
        help="With a folder: the question asked about every clip (repeat for several).",
    ),
    presets: o.Presets = "1_3",
    methods: o.Methods = "vitcop",
    model: o.Model = o.DEFAULT_MODEL,
    fps: o.Fps = None,
    frames: o.Frames = None,
    max_frames: o.MaxFrames = 768,
    max_pixels: o.MaxPixels = None,
    min_pixels: o.MinPixels = None,
    max_new_tokens: o.MaxNewTokens = 256,
    temperature: o.Temperature = 0.0,
    top_p: o.TopP = None,
    seed: o.Seed = None,
    system: o.System = None,
    device: o.Device = "auto",
    dtype: o.Dtype = "auto",
    attn: o.Attn = "auto",
    resize: o.Resize = "fast",
    decoder: o.Decoder = "decord",
    decode_device: o.DecodeDevice = "cpu",
    prefix_cache: o.PrefixCache = None,
    prefix_cache_gb: o.PrefixCacheGb = 4.0,
    prefetch: bool = typer.Option(
        True, "--prefetch/--no-prefetch", help="Decode and preprocess the next clip while the current one generates."
    ),
    skip_failed: bool = typer.Option(
        False, "--skip-failed", metavar="", help="On resume, leave items that failed before alone (default: retry them)."
    ),
    nproc: Optional[int] = typer.Option(
        None, "--nproc", metavar="N",
        help="Run N ranks on this machine through torchrun (one per GPU). Several machines: see README.",
    ),
    json_out: bool = typer.Option(
        False, "--json", metavar="", help="Print the summary as one JSON object on stdout (no table)."
    ),
    offline: o.Offline = False,
    debug: o.Debug = False,
) -> None:
    """Ask about every clip of a folder (--question) or every line of a JSONL file; one JSON line per result.

    JSONL lines: {"video": path relative to the file, "question": ..., "id"?, "options"?: [...], "answer"?}.
    With options, the model gets a multiple-choice prompt and its letter is scored against "answer".

    Each result is synced to disk as soon as it is known (in <out>.part-N files, merged into --out at
    the end). After a crash, Ctrl-C or kill, run the same command again: results already there are
    skipped, failed ones are retried (unless --skip-failed). The preset none runs once per item.

    Consecutive questions on one clip share its pruned prefix: the clip is decoded, encoded and pruned once
    per preset and method, and the later questions only prefill their own tokens (same answers).
    With --prefix-cache DIR the pruned prefixes are also kept on disk: a later run (or another rank or machine
    sharing DIR) about the same clip, options and model reads them instead of decoding and prefilling again.

    Many GPUs: --nproc N, or torchrun --nproc-per-node N -m vitcop_cli batch ... (also multi-node).

    Ends with a summary per method and preset. Exit status: 0 all answered, 1 some failed, 2 usage error,
    130 / 143 / 129 interrupted by Ctrl-C / SIGTERM / SIGHUP.
    """
    state["debug"] = debug
    dctx = lock = None
    try:
        from ..cli.signals import terminate_as_interrupt
        from . import dist as batch_dist
        from .lock import OutLock
        from .request import check_request

        if fps is not None and frames is not None:
            raise InputError("--fps and --frames are mutually exclusive; give one of them")
        if not input.exists():
            raise InputError(f"input not found: {input}; give a folder or a JSONL questions file")
        run_options = dict(fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels, min_pixels=min_pixels,
                           max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, resize=resize,
                           decoder=decoder, decode_device=decode_device)
        # before torch is imported: bad options, inputs and --out fail in a second
        loaded, method_list, _ = check_request(presets.split(","), methods.split(","), out, input, **run_options)
        check_prefix_cache(prefix_cache, prefix_cache_gb)
        inputs = _read_inputs(input, question)
        if nproc is not None:
            _launch(ctx, nproc, out, debug)
        with terminate_as_interrupt():
            dctx = batch_dist.from_env()
            root = dctx is None or dctx.is_root

            def take_lock():  # before the model loads: a refusal costs nothing
                return OutLock(out) if root else None

            lock = take_lock() if dctx is None else dctx.agree("taking the --out lock", take_lock)
            device = _rank_device(dctx, device)
            store = prefix_store(prefix_cache, prefix_cache_gb)  # every rank: they share the folder
            options = dict(
                presets=presets.split(","), methods=method_list, fps=fps, frames=frames, max_frames=max_frames,
                max_pixels=max_pixels, min_pixels=min_pixels, system=system, max_new_tokens=max_new_tokens,
                temperature=temperature, top_p=top_p, seed=seed, prefetch=prefetch, retry_failed=not skip_failed,
                dist=dctx, lock=lock, resize=resize, decoder=decoder, decode_device=decode_device,
                prefix_store=store,
            )
            load = dict(model=model, device=device, dtype=dtype, attn=attn, offline=offline)
            summary = _run(inputs, out, loaded, load, options, dctx, json_out=json_out, debug=debug)
        raise typer.Exit(summary.exit_code)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        if isinstance(exc, typer.Exit):
            raise
        _fail(exc, dctx)
    finally:
        if lock is not None:
            lock.release()
        if dctx is not None:
            dctx.close()


def _read_inputs(input: Path, question: Optional[list[str]]):  # noqa: A002
    """The items of a folder (every ``--question`` about every clip) or of a JSONL questions file."""
    from ..questions.inputs import read_folder, read_jsonl

    if input.is_dir():
        return read_folder(input, question or [])
    from ..media.video import is_media_file

    if is_media_file(input):
        raise InputError(
            f"{input} is a single clip; give a folder of clips or a JSONL questions file (or use `vitcop ask`)"
        )
    if question:
        raise InputError("--question is for folders; a JSONL file carries a question on every line")
    return read_jsonl(input)


def _launch(ctx: typer.Context, nproc: int, out: Path, debug: bool) -> None:
    """``--nproc N``: start torchrun with N ranks running this same command, and exit with its status."""
    from . import dist as batch_dist
    from . import launch
    from .lock import OutLock

    if nproc < 1:
        raise InputError("--nproc must be at least 1")
    if batch_dist.under_torchrun():
        raise InputError("--nproc starts torchrun itself; under torchrun leave it out")
    OutLock(out).release()  # refuse now, before starting any rank, if another batch holds --out
    raise typer.Exit(launch.launch(nproc, launch.worker_argv(ctx), debug=debug))


def _rank_device(dctx, device: str) -> str:
    """Under torchrun: each rank on its own GPU (``cuda:<local rank>``), or the CPU threads split between ranks."""
    if dctx is None:
        return device
    import torch

    from . import dist as batch_dist

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{dctx.local_rank}"
    if device == "cpu" or not torch.cuda.is_available():
        torch.set_num_threads(batch_dist.threads_per_rank(dctx.local_world))
    return device


def _run(inputs, out: Path, loaded: list, load: dict, options: dict, dctx, *, json_out: bool, debug: bool):
    """Load the model (agreed between ranks), run the batch with progress and render the summary on rank 0.
    Returns rank 0's summary; other ranks exit 0 when done (rank 0 reports the job and its status)."""
    import json

    from .. import api, batch  # torch from here on
    from ..questions.inputs import printable
    from . import view as batch_view

    root = dctx is None or dctx.is_root
    api.quiet_library_logs(debug)
    with batch_view.BatchConsole() as console:
        if root:
            for note in inputs.notes:
                console.print(f"[yellow]note[/]: {escape(printable(note))}", highlight=False, soft_wrap=True)

        def load_session():
            session = api.load(**load)
            batch.check_presets_fit(session, loaded)
            session.check_lengths(options["max_new_tokens"])  # up front, before any job or --out
            return session

        with console.status(f"loading {escape(load['model'])} …", spinner="dots") if root else nullcontext():
            session = load_session() if dctx is None else dctx.agree("loading the model", load_session)
        try:
            if not root:
                batch.run_batch(session, inputs.items, out, **options)
                raise typer.Exit(0)  # rank 0 reports the job and its status
            summary = batch_view.run_with_progress(console, session, inputs.items, out, debug=debug, **options)
        except batch.BatchInterrupted as exc:
            raise typer.Exit(_interrupted(exc, out, dctx, console)) from None
        if json_out:
            print(json.dumps(summary.to_dict(), indent=2))
        else:
            batch_view.render_summary(summary, Console())
        batch_view.render_notes(summary, console)
        return summary


def _interrupted(exc, out: Path, dctx, console) -> int:
    """Say (rank 0) how many results this run wrote and where; the exit status of the interruption."""
    from ..cli.signals import Terminated
    from ..questions.inputs import printable

    terminated = isinstance(exc.cause, Terminated)
    if dctx is None or dctx.is_root:
        n = exc.summary.ok + exc.summary.failed
        where = (f"to {escape(printable(out))}" if dctx is None
                 else f"next to {escape(printable(out))} (part files, merged by the next run)")
        why = exc.cause.signal_name if terminated else "Ctrl-C"
        console.print(
            f"[bold red]interrupted[/] ({why}): {n} result{'s' if n != 1 else ''} written {where} "
            "this run; run the same command again to resume",
            highlight=False, soft_wrap=True,
        )
    return exc.cause.exit_code if terminated else 130


def _fail(exc: BaseException, dctx) -> None:
    """The one-line failure; under torchrun rank 0 reports what all ranks share, the others name themselves."""
    if dctx is not None and not dctx.is_root:
        if getattr(exc, "reported_by_root", False):
            raise typer.Exit(exc.exit_code) from None
        if isinstance(exc, KeyboardInterrupt):
            raise typer.Exit(getattr(exc, "exit_code", 130)) from None
        if isinstance(exc, VitcopError):
            exc = type(exc)(f"rank {dctx.rank} on {dctx.host}: {exc}")
    fail(exc)
