"""``vitcop`` command line: parse, call the library (:mod:`vitcop_cli.api`), render. Nothing else.

Exit statuses: 0 success, 2 usage / input errors, 1 runtime failures. Expected failures print one
line on stderr; ``--debug`` shows the full traceback of anything.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from . import cli_options as o
from .errors import InputError, VitcopError
from .help_format import VitcopGroup

app = typer.Typer(
    help="Ask vision-language models about videos, with ViTCoP visual-token pruning and an honest cost report.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    cls=VitcopGroup,
)
dev_app = typer.Typer(help="Developer tools: offline random-weight checkpoints.", no_args_is_help=True, cls=VitcopGroup)
app.add_typer(dev_app, name="dev")

err = Console(stderr=True)
_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"vitcop {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print vitcop's version and exit."
    ),
) -> None:
    pass


def _fail(exc: BaseException) -> None:
    """Print one line (or a traceback with --debug) and exit with the error's status."""
    from .signals import Terminated

    if _state["debug"]:
        err.print_exception()
    if isinstance(exc, VitcopError):
        # Messages quote user input (paths, model ids) verbatim: escape it, or "[...]" in a file name is
        # taken for rich markup (swallowed, or a MarkupError traceback for "[/...]").
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code)
    if isinstance(exc, Terminated):  # SIGTERM / SIGHUP: like Ctrl-C, with the shell's status for that signal
        err.print(f"[bold red]terminated[/] by {exc.signal_name}", highlight=False)
        raise typer.Exit(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        err.print("[bold red]interrupted[/]")
        raise typer.Exit(130)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    err.print(
        f"[bold red]error:[/] {type(exc).__name__}: {escape(first)} (run with --debug for the traceback)",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(1)


@app.command()
def ask(
    video: str = typer.Argument(
        ..., metavar="VIDEO",
        help="A video (mp4, mkv, webm, avi, mov, ...) or image (jpg, png, webp) file, or an http(s):// URL.",
    ),
    question: str = typer.Argument(..., metavar="QUESTION", help="The question to ask about it; - reads it from stdin."),
    model: o.Model = o.DEFAULT_MODEL,
    preset: o.Preset = "1_3",
    method: o.Method = "vitcop",
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
    stream: bool = typer.Option(True, "--stream/--no-stream", help="Stream the answer as it is generated."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (answer + full report) on stdout."),
    offline: o.Offline = False,
    debug: o.Debug = False,
) -> None:
    """Answer QUESTION about VIDEO; the answer goes to stdout, the cost report to stderr (with --json: one
    JSON object on stdout, and each warning also as one 'warning: ...' line on stderr)."""
    _state["debug"] = debug
    try:
        from .signals import terminate_as_interrupt

        with terminate_as_interrupt():
            from . import options

            _one_of("--preset", preset, "preset")
            _one_of("--method", method, "method")
            question = _read_question(question)
            options.check_text(system, "--system")
            options.check_run_options(  # fail fast (no torch imported yet), before loading a model
                [preset], [method], fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels,
                min_pixels=min_pixels, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                seed=seed, system=system,
            )
            _check_local_media(video)
            offline = _check_model(model, offline)
            media = _media(video, progress=not json_out)
            from . import api, report

            api.quiet_library_logs(debug)
            with err.status(f"loading {escape(model)} …", spinner="dots") if not json_out else nullcontext():
                session = api.load(model, device=device, dtype=dtype, attn=attn, offline=offline)
            startup_s = _since_process_start()
            streaming = stream and not json_out
            result = session.ask(
                media, question, preset=preset, method=method, fps=fps, frames=frames, max_frames=max_frames,
                max_pixels=max_pixels, min_pixels=min_pixels, system=system, max_new_tokens=max_new_tokens,
                temperature=temperature, top_p=top_p, on_text=_write_stdout if streaming else None, seed=seed,
            )
            result.timings.startup_s = startup_s
            if json_out:
                print(report.to_json(result))
                for w in result.warnings:  # also in the JSON; stderr keeps them visible, one line each
                    print(f"warning: {' '.join(w.split())}", file=sys.stderr)
                return
            print("" if streaming else result.answer, flush=True)
            report.render(result, err)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        if isinstance(exc, typer.Exit):
            raise
        _fail(exc)


def _one_of(option: str, value: str, what: str) -> None:
    """``ask`` runs one preset and one method: a comma list gets a pointer to the commands that run several."""
    if "," in value and not Path(value).exists():
        raise InputError(
            f"{option} {value}: ask runs one {what}; to compare several use `vitcop profile` or `vitcop batch`"
        )


def _read_question(question: str) -> str:
    """The question, or for ``-`` stdin (at most MAX_TEXT_CHARS characters are read)."""
    from .options import MAX_TEXT_CHARS, check_text

    if question == "-":
        try:
            question = sys.stdin.read(MAX_TEXT_CHARS + 1)
        except UnicodeDecodeError:
            raise InputError("the question on stdin is not UTF-8 text") from None
        check_text(question, "the question on stdin")
        question = question.strip()
    check_text(question)
    if not question.strip():
        raise InputError("the question is empty")
    return question


def _check_local_media(arg: str) -> None:
    """A local VIDEO must exist and be a media file (URLs are fetched later, by :func:`_media`)."""
    from .download import is_url
    from .video import check_path

    if not is_url(arg):
        check_path(arg)


def _check_model(model: str, offline: bool) -> bool:
    """The model's config.json alone, before torch is imported: a missing folder, an unsupported type,
    offline without a cached copy or no network fail here in about a second. Returns the offline
    flag to load with (True when there is no network but the model is cached)."""
    from . import model_ref

    declared, offline = model_ref.declared_config(model, offline=offline)
    model_ref.check_model_type(model, declared)
    return offline


def _media(arg: str, *, progress: bool) -> Path:
    """A local media file for VIDEO: an http(s):// URL is downloaded into the cache (with a progress bar)."""
    from .download import DEFAULT_MAX_BYTES, fetch, is_url
    from .video import check_path

    if is_url(arg):
        return fetch(arg, max_bytes=DEFAULT_MAX_BYTES, progress=progress and err.is_terminal)
    check_path(arg)
    return Path(arg)


def _since_process_start() -> float | None:
    """Seconds since this process started (interpreter, imports, model load): the start-up cost."""
    import time

    try:
        import psutil

        return max(time.time() - psutil.Process().create_time(), 0.0)
    except Exception:  # noqa: BLE001 - a missing figure, not an error
        return None


@app.command("presets")
def presets_cmd(
    model: Optional[str] = typer.Option(
        None, "--model", "-m", envvar="VITCOP_MODEL",
        help="Show budgets for this model's depth [default: Qwen/Qwen2-VL-2B-Instruct, 28 layers].",
    ),
    visual_tokens: int = typer.Option(
        4096, "--visual-tokens", help="N used for the budget columns (a typical clip)."
    ),
    offline: o.Offline = False,
    debug: o.Debug = False,
) -> None:
    """List the built-in pruning presets and the token budgets they give (no model is loaded)."""
    _state["debug"] = debug
    try:
        from . import report
        from .preset_table import preset_table

        rows = preset_table(model=model, n_visual=visual_tokens, offline=offline)
        report.render_presets(rows, Console(), model=model, n_visual=visual_tokens)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        if isinstance(exc, typer.Exit):
            raise
        _fail(exc)


@app.command("batch")
def batch_cmd(
    ctx: typer.Context,
    input: Path = typer.Argument(  # noqa: A002 - named for the usage line
        ..., help="A folder (searched recursively for videos and images) or a JSONL questions file."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="JSONL file the results go to; run again with the same --out to resume."
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

    Many GPUs: --nproc N, or torchrun --nproc-per-node N -m vitcop_cli batch ... (also multi-node).

    Ends with a summary per method and preset. Exit status: 0 all answered, 1 some failed, 2 usage error,
    130 / 143 / 129 interrupted by Ctrl-C / SIGTERM / SIGHUP.
    """
    _state["debug"] = debug
    dctx = lock = None
    try:
        import json

        from . import api, batch
        from .batch import dist as batch_dist
        from .batch import view as batch_view
        from .signals import Terminated, terminate_as_interrupt

        if fps is not None and frames is not None:
            raise InputError("--fps and --frames are mutually exclusive; give one of them")
        if not input.exists():
            raise InputError(f"input not found: {input}; give a folder or a JSONL questions file")
        preset_list, method_list = presets.split(","), methods.split(",")
        batch.check_run_options(
            preset_list, method_list, fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels,
            min_pixels=min_pixels, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
        )
        if input.is_dir():
            inputs = batch.read_folder(input, question or [])
        else:
            from .video import is_media_file

            if is_media_file(input):
                raise InputError(
                    f"{input} is a single clip; give a folder of clips or a JSONL questions file (or use `vitcop ask`)"
                )
            if question:
                raise InputError("--question is for folders; a JSONL file carries a question on every line")
            inputs = batch.read_jsonl(input)
        batch.check_out_path(out, input)
        if nproc is not None:
            from .batch import launch

            if nproc < 1:
                raise InputError("--nproc must be at least 1")
            if batch_dist.under_torchrun():
                raise InputError("--nproc starts torchrun itself; under torchrun leave it out")
            batch.OutLock(out).release()  # refuse now, before starting any rank, if another batch holds --out
            raise typer.Exit(launch.launch(nproc, launch.worker_argv(ctx), debug=debug))
        with terminate_as_interrupt():
            dctx = batch_dist.from_env()
            root = dctx is None or dctx.is_root

            def take_lock():  # before the model loads: a refusal costs nothing
                return batch.OutLock(out) if root else None

            lock = take_lock() if dctx is None else dctx.agree("taking the --out lock", take_lock)
            if dctx is not None:
                import torch

                if device in ("auto", "cuda") and torch.cuda.is_available():
                    device = f"cuda:{dctx.local_rank}"
                elif device == "cpu" or not torch.cuda.is_available():
                    torch.set_num_threads(batch_dist.threads_per_rank(dctx.local_world))
            api.quiet_library_logs(debug)
            with batch_view.BatchConsole() as console:
                if root:
                    for note in inputs.notes:
                        console.print(f"[yellow]note[/]: {escape(batch.printable(note))}", highlight=False,
                                      soft_wrap=True)

                def load():
                    session = api.load(model, device=device, dtype=dtype, attn=attn, offline=offline)
                    batch.check_presets_fit(session, batch.check_run_options(preset_list, method_list)[0])
                    batch.check_lengths_fit(session, max_new_tokens)  # up front, before any job or --out
                    return session

                with console.status(f"loading {escape(model)} …", spinner="dots") if root else nullcontext():
                    session = load() if dctx is None else dctx.agree("loading the model", load)
                options = dict(
                    presets=preset_list, methods=method_list, fps=fps, frames=frames, max_frames=max_frames,
                    max_pixels=max_pixels, min_pixels=min_pixels, system=system, max_new_tokens=max_new_tokens,
                    temperature=temperature, top_p=top_p, seed=seed, prefetch=prefetch, retry_failed=not skip_failed,
                    dist=dctx, lock=lock,
                )
                try:
                    if root:
                        summary = batch_view.run_with_progress(console, session, inputs.items, out, debug=debug,
                                                               **options)
                    else:
                        batch.run_batch(session, inputs.items, out, **options)
                        raise typer.Exit(0)  # rank 0 reports the job and its status
                except batch.BatchInterrupted as exc:
                    code = exc.cause.exit_code if isinstance(exc.cause, Terminated) else 130
                    if root:
                        s = exc.summary
                        n = s.ok + s.failed
                        where = (f"to {escape(batch.printable(out))}" if dctx is None
                                 else f"next to {escape(batch.printable(out))} (part files, merged by the next run)")
                        why = exc.cause.signal_name if isinstance(exc.cause, Terminated) else "Ctrl-C"
                        console.print(
                            f"[bold red]interrupted[/] ({why}): {n} result{'s' if n != 1 else ''} written {where} "
                            "this run; run the same command again to resume",
                            highlight=False, soft_wrap=True,
                        )
                    raise typer.Exit(code)
                if json_out:
                    print(json.dumps(summary.to_dict(), indent=2))
                else:
                    batch_view.render_summary(summary, Console())
                batch_view.render_notes(summary, console)
        raise typer.Exit(summary.exit_code)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        if isinstance(exc, typer.Exit):
            raise
        if dctx is not None and not dctx.is_root:  # rank 0 reports what all ranks share
            if getattr(exc, "reported_by_root", False):
                raise typer.Exit(exc.exit_code) from None
            if isinstance(exc, KeyboardInterrupt):
                raise typer.Exit(getattr(exc, "exit_code", 130)) from None
            if isinstance(exc, VitcopError):
                exc = type(exc)(f"rank {dctx.rank} on {dctx.host}: {exc}")
        _fail(exc)
    finally:
        if lock is not None:
            lock.release()
        if dctx is not None:
            dctx.close()


@app.command("methods")
def methods_cmd() -> None:
    """List the pruning methods (`--method`); baselines take the preset's layer-averaged ratio."""
    from rich.table import Table

    from .catalog import METHODS

    table = Table(title="pruning methods", title_justify="left")
    table.add_column("method", style="bold")
    table.add_column("what it does")
    for name, description in METHODS.items():
        table.add_row(name, description)
    Console().print(table)


@dev_app.command("make-model")
def make_model_cmd(
    family: str = typer.Argument(..., help="qwen2_vl, llava_onevision, qwen2_5_vl, qwen3_vl or qwen3_vl_moe."),
    out: Path = typer.Argument(..., help="Folder to write the checkpoint into."),
    size: str = typer.Option("tiny", "--size", help="tiny (tests) or bench (benchmarks)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights (0 to 2**63 - 1)."),
    debug: o.Debug = False,
) -> None:
    """Write a random-weight checkpoint (real config, tokenizer, processor) that loads like a real one.

    Its answers are meaningless text; it exists to exercise every code path offline.
    """
    _state["debug"] = debug
    try:
        from .options import check_seed

        check_seed(seed)
        from .api import quiet_library_logs
        from .devmodels import make_model

        if out.exists() and not out.is_dir():
            raise InputError(f"{out} exists and is not a folder; give a new or existing folder to write into")
        quiet_library_logs(debug)  # no "Writing model shards" progress bar
        try:
            path = make_model(family, out, size=size, seed=seed)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        except OSError as exc:
            raise InputError(f"cannot write the checkpoint to {out}: {exc.strerror or exc}") from None
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        if isinstance(exc, typer.Exit):
            raise
        _fail(exc)
    err.print(f"wrote {family} ({size}) random-weight checkpoint to {escape(str(path))}", highlight=False, soft_wrap=True)


@app.command("profile")
def profile_cmd(
    video: str = typer.Argument(
        ..., metavar="VIDEO", help="A video file (or an image, or an http(s):// URL) to profile on."
    ),
    question: str = typer.Option(
        "Describe what happens in the video.", "--question", "-q",
        help="The question asked; - reads it from stdin.", show_default=False,
    ),
    presets: o.ProfilePresets = "none,1_3,2_9,1_9",
    methods: o.Methods = "vitcop",
    repeat: int = typer.Option(3, "--repeat", help="Measured runs per (method, preset); medians are reported."),
    warmup: int = typer.Option(1, "--warmup", help="Unmeasured warm-up runs per (method, preset)."),
    model: o.Model = o.DEFAULT_MODEL,
    fps: o.Fps = None,
    frames: o.Frames = None,
    max_frames: o.MaxFrames = 768,
    max_pixels: o.MaxPixels = None,
    min_pixels: o.MinPixels = None,
    max_new_tokens: o.MaxNewTokens = 32,
    temperature: o.Temperature = 0.0,
    top_p: o.TopP = None,
    seed: o.Seed = None,
    system: o.System = None,
    device: o.Device = "auto",
    dtype: o.Dtype = "auto",
    attn: o.Attn = "auto",
    json_out: bool = typer.Option(False, "--json", help="Print the profile as one JSON object on stdout (no table)."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write one CSV line per (method, preset) here."),
    plot_path: Optional[Path] = typer.Option(
        None, "--plot",
        help="Also draw speed-up and memory ratio vs layer-averaged ratio (.png/.svg/.pdf; needs matplotlib).",
    ),
    answers: Optional[Path] = typer.Option(
        None, "--answers", metavar="FILE",
        help="Labelled questions about the clip (batch's JSONL format, with \"answer\"): adds accuracy per row.",
    ),
    offline: o.Offline = False,
    debug: o.Debug = False,
) -> None:
    """Time every (method, preset) on one clip: load and prepare once, warm up, then interleaved repeats.

    Table on stdout: visual tokens, prefill / TTFT medians (min–max), decode speed, FLOPs, speed-up vs none.

    The default question is "Describe what happens in the video."; answers are greedy unless --temperature > 0 (then --seed makes every run sample the same way).
    """
    _state["debug"] = debug
    try:
        from .signals import terminate_as_interrupt

        with terminate_as_interrupt():
            _profile(
                video, question, presets, methods, repeat, warmup, model, fps, frames, max_frames, max_pixels,
                min_pixels, max_new_tokens, temperature, top_p, seed, system, device, dtype, attn, json_out,
                csv_path, plot_path, offline, debug, answers=answers,
            )
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        if isinstance(exc, typer.Exit):
            raise
        _fail(exc)


def _profile(
    video, question, presets, methods, repeat, warmup, model, fps, frames, max_frames, max_pixels, min_pixels,
    max_new_tokens, temperature, top_p, seed, system, device, dtype, attn, json_out, csv_path, plot_path, offline,
    debug, *, answers=None,
) -> None:
    if repeat < 1:
        raise InputError("--repeat must be at least 1")
    if warmup < 0:
        raise InputError("--warmup must be >= 0")
    question = _read_question(question)
    preset_list = [p.strip() for p in presets.split(",") if p.strip()]
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    import time

    from . import options

    options.check_run_options(  # fail fast (no torch imported yet), before loading a model
        preset_list, method_list, fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels,
        min_pixels=min_pixels, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
        system=system,
    )
    if plot_path is not None:
        from .plot import check_plot_path

        check_plot_path(plot_path)
    if csv_path is not None and (csv_path.is_dir() or not csv_path.parent.is_dir()):
        raise InputError(f"--csv {csv_path}: " + (
            "is a folder; give a file name" if csv_path.is_dir() else f"folder {csv_path.parent} does not exist"))
    _check_local_media(video)
    media = _media(video, progress=True)
    labelled_items = None
    if answers is not None:  # a bad answers file fails before the model loads
        from .profile_answers import read_answers

        labelled_items, notes = read_answers(answers, media)
        for note in notes:
            err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    offline = _check_model(model, offline)  # config.json only: fast one-line failures before torch loads
    from . import api, profile as prof, profile_view, video as video_mod

    api.quiet_library_logs(debug)
    with err.status(f"loading {escape(model)} …", spinner="dots"):
        session = api.load(model, device=device, dtype=dtype, attn=attn, offline=offline)
        for p in preset_list:  # every preset against the model's depth, once, before any clip work
            session.check_preset(p)
        session.check_lengths(max_new_tokens)
        started = time.perf_counter()
        visual = video_mod.load_visual(media, fps=2.0 if fps is None else fps, frames=frames, max_frames=max_frames)
        decode_s = time.perf_counter() - started
        prepared = session.prepare(visual, question, system=system, max_pixels=max_pixels, min_pixels=min_pixels)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.progress import TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), console=err, transient=True,
    ) as bar:
        task = bar.add_task("profiling", total=None)

        def on_progress(done, total, slot):
            what = "done" if slot is None else (
                f"{'warm-up' if slot.warmup else f'repeat {slot.round - warmup + 1}/{repeat}'} · "
                f"{'none (baseline)' if slot.method == prof.BASELINE else f'{slot.method} {slot.preset}'}"
            )
            bar.update(task, completed=done, total=total, description=escape(what))

        result = prof.run_profile(
            session, prepared, preset_list, method_list, repeat=repeat, warmup=warmup,
            max_new_tokens=max_new_tokens, on_progress=on_progress, video_decode_s=decode_s,
            temperature=temperature, top_p=top_p, seed=seed,
        )
    if labelled_items:
        from .profile_answers import add_accuracy, prepare_answers

        with err.status("scoring the labelled questions …", spinner="dots"):
            labelled = prepare_answers(session, visual, labelled_items, system=system, max_pixels=max_pixels,
                                       min_pixels=min_pixels)
            add_accuracy(session, result, labelled, answers_file=str(answers), max_new_tokens=max_new_tokens,
                         temperature=temperature, top_p=top_p, seed=seed)
    if json_out:  # the result first: a file that cannot be written must not lose the measurements
        print(prof.to_json(result), flush=True)
    else:
        profile_view.render_profile(result, Console())
    for what, path, write in (("CSV", csv_path, prof.to_csv), ("plot", plot_path, profile_view.write_plot)):
        if path is not None:
            try:
                write(result, path)
            except OSError as exc:
                raise InputError(f"cannot write the {what} to {path}: {exc.strerror or exc}") from None
            err.print(f"wrote the {what} to {escape(str(path))}", highlight=False, soft_wrap=True)


from .serve.cli import serve_cmd  # noqa: E402 - the command lives with the server (vitcop_cli/serve/)

app.command("serve")(serve_cmd)


@app.command("doctor")
def doctor_cmd(
    device: str = typer.Option("cpu", "--device", help="Where to run the self-tests: cpu, cuda or cuda:N."),
    family: Optional[list[str]] = typer.Option(
        None, "--family", help="Self-test only this model family (repeatable; default: every supported one)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
    debug: o.Debug = False,
) -> None:
    """Check this installation: versions, devices, and pruning self-tests on tiny models of every family.

    Run it after installing or upgrading (no network needed). Exit 0 when everything passes and
    transformers is inside the tested range, 1 otherwise.
    """
    _state["debug"] = debug
    try:
        import json

        from . import doctor, doctor_view

        out = Console()
        report = doctor.inspect()
        if not json_out:
            doctor_view.render_environment(report, out)
        on_check = None if json_out else (lambda check: doctor_view.render_check(check, out))
        families = tuple(family) if family else doctor.FAMILIES
        unknown = sorted(set(families) - set(doctor.FAMILIES))
        if unknown:
            raise InputError(f"unknown model family {unknown[0]!r}; choose from {', '.join(doctor.FAMILIES)}")
        report = doctor.run(device, families=families, on_check=on_check, report=report)
        if json_out:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            doctor_view.render_verdict(report, out)
        raise typer.Exit(0 if report.passed else 1)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        if isinstance(exc, typer.Exit):
            raise
        _fail(exc)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(prog_name="vitcop")
    except SystemExit as exc:  # a worker thread still inside torch would abort finalisation (status 134)
        from .process_exit import exit_process

        exit_process(exc.code)
        raise


if __name__ == "__main__":
    main()
