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

app = typer.Typer(
    help="Ask vision-language models about videos, with ViTCoP visual-token pruning and an honest cost report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dev_app = typer.Typer(help="Developer tools: offline random-weight checkpoints.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")

err = Console(stderr=True)
_state = {"debug": False}


def _fail(exc: BaseException) -> None:
    """Print one line (or a traceback with --debug) and exit with the error's status."""
    if _state["debug"]:
        err.print_exception()
    if isinstance(exc, VitcopError):
        # Messages quote user input (paths, model ids) verbatim: escape it, or "[...]" in a file name is
        # taken for rich markup (swallowed, or a MarkupError traceback for "[/...]").
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
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
    video: Path = typer.Argument(..., help="A video file (mp4, mkv, webm, avi, mov, ...) or an image (jpg, png, webp)."),
    question: str = typer.Argument(..., help="The question to ask about it."),
    model: o.Model = o.DEFAULT_MODEL,
    preset: str = typer.Option(
        "1_3", "--preset", "-p", help="Pruning preset: none, 1_3, 2_9, 1_9, or a YAML file (see `vitcop presets`)."
    ),
    method: str = typer.Option(
        "vitcop", "--method", help="Pruning method: vitcop, or a baseline (fastv, divprune, uniform) at the same ratio."
    ),
    fps: o.Fps = None,
    frames: o.Frames = None,
    max_frames: o.MaxFrames = 768,
    max_pixels: o.MaxPixels = None,
    min_pixels: o.MinPixels = None,
    max_new_tokens: o.MaxNewTokens = 256,
    temperature: o.Temperature = 0.0,
    top_p: o.TopP = None,
    system: o.System = None,
    device: o.Device = "auto",
    dtype: o.Dtype = "auto",
    attn: o.Attn = "auto",
    stream: bool = typer.Option(True, "--stream/--no-stream", help="Stream the answer as it is generated."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (answer + full report) on stdout."),
    offline: o.Offline = False,
    debug: o.Debug = False,
) -> None:
    """Answer QUESTION about VIDEO; the answer goes to stdout, the cost report to stderr."""
    _state["debug"] = debug
    try:
        from . import api, options, report, video as video_mod

        options.check_run_options(  # fail fast, before loading a model
            [preset], [method], fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels,
            min_pixels=min_pixels, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
        )
        video_mod.check_path(str(video))
        api.quiet_library_logs(debug)
        with err.status(f"loading {escape(model)} …", spinner="dots") if not json_out else nullcontext():
            session = api.load(model, device=device, dtype=dtype, attn=attn, offline=offline)
        streaming = stream and not json_out
        result = session.ask(
            video,
            question,
            preset=preset,
            method=method,
            fps=fps,
            frames=frames,
            max_frames=max_frames,
            max_pixels=max_pixels,
            min_pixels=min_pixels,
            system=system,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            on_text=_write_stdout if streaming else None,
        )
        if json_out:
            print(report.to_json(result))
            return
        print("" if streaming else result.answer, flush=True)
        report.render(result, err)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        if isinstance(exc, typer.Exit):
            raise
        _fail(exc)


@app.command("presets")
def presets_cmd(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Show budgets for this model's depth."),
    visual_tokens: int = typer.Option(
        4096, "--visual-tokens", help="N used for the budget columns (a typical clip)."
    ),
    offline: bool = typer.Option(False, "--offline", help="Never download the model's config."),
    debug: o.Debug = False,
) -> None:
    """List the built-in pruning presets and the token budgets they give."""
    _state["debug"] = debug
    try:
        from . import api, report

        rows = api.preset_table(model=model, n_visual=visual_tokens, offline=offline)
        report.render_presets(rows, Console(), model=model, n_visual=visual_tokens)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        if isinstance(exc, typer.Exit):
            raise
        _fail(exc)


@app.command("batch")
def batch_cmd(
    input: Path = typer.Argument(  # noqa: A002 - named for the usage line
        ..., help="A folder (searched recursively for videos and images) or a JSONL questions file."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="JSONL file the results are appended to; run again with the same --out to resume."
    ),
    question: Optional[list[str]] = typer.Option(
        None, "--question", "-q", metavar="TEXT",
        help="With a folder: the question asked about every clip (repeat for several).",
    ),
    presets: str = typer.Option(
        "1_3", "--presets", "-p", help="Comma-separated pruning presets, each item runs under each: e.g. none,1_3,1_9."
    ),
    methods: str = typer.Option("vitcop", "--methods", help="Comma-separated methods: vitcop, fastv, divprune, uniform."),
    model: o.Model = o.DEFAULT_MODEL,
    fps: o.Fps = None,
    frames: o.Frames = None,
    max_frames: o.MaxFrames = 768,
    max_pixels: o.MaxPixels = None,
    min_pixels: o.MinPixels = None,
    max_new_tokens: o.MaxNewTokens = 256,
    temperature: o.Temperature = 0.0,
    top_p: o.TopP = None,
    system: o.System = None,
    device: o.Device = "auto",
    dtype: o.Dtype = "auto",
    attn: o.Attn = "auto",
    prefetch: bool = typer.Option(
        True, "--prefetch/--no-prefetch", help="Decode and preprocess the next clip while the current one generates."
    ),
    skip_failed: bool = typer.Option(
        False, "--skip-failed", help="On resume, leave items that failed before alone (default: retry them)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON object on stdout (no table)."),
    offline: o.Offline = False,
    debug: o.Debug = False,
) -> None:
    """Ask about every clip of a folder (--question) or every line of a JSONL file; one JSON line per result.

    JSONL lines: {"video": path relative to the file, "question": ..., "id"?, "options"?: [...], "answer"?}.
    With options, the model gets a multiple-choice prompt and its letter is scored against "answer".

    Each result is appended and synced as soon as it is known. After a crash or Ctrl-C, run the same
    command again: results already in --out are skipped, failed ones are retried (unless --skip-failed).

    Ends with a summary per method and preset. Exit status: 0 all answered, 1 some failed, 2 usage error.
    """
    _state["debug"] = debug
    try:
        import json

        from . import api, batch, batch_view

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
            items = batch.items_from_folder(input, question or [])
        else:
            from .video import is_media_file

            if is_media_file(input):
                raise InputError(
                    f"{input} is a single clip; give a folder of clips or a JSONL questions file (or use `vitcop ask`)"
                )
            if question:
                raise InputError("--question is for folders; a JSONL file carries a question on every line")
            items = batch.items_from_jsonl(input)
        batch.check_out_path(out, input)
        api.quiet_library_logs(debug)
        with batch_view.BatchConsole() as console:
            with console.status(f"loading {escape(model)} …", spinner="dots"):
                session = api.load(model, device=device, dtype=dtype, attn=attn, offline=offline)
            try:
                summary = batch_view.run_with_progress(
                    console, session, items, out, debug=debug, presets=preset_list, methods=method_list, fps=fps, frames=frames,
                    max_frames=max_frames, max_pixels=max_pixels, min_pixels=min_pixels, system=system,
                    max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, prefetch=prefetch,
                    retry_failed=not skip_failed,
                )
            except batch.BatchInterrupted as exc:
                s = exc.summary
                console.print(
                    f"[bold red]interrupted[/]: {s.ok + s.failed} result{'s' if s.ok + s.failed != 1 else ''} written "
                    f"to {escape(str(out))} this run; run the same command again to resume",
                    highlight=False, soft_wrap=True,
                )
                raise typer.Exit(130)
            if json_out:
                print(json.dumps(summary.to_dict(), indent=2))
            else:
                batch_view.render_summary(summary, Console())
            batch_view.render_notes(summary, console)
        raise typer.Exit(summary.exit_code)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        if isinstance(exc, typer.Exit):
            raise
        _fail(exc)


@app.command("methods")
def methods_cmd() -> None:
    """List the pruning methods (`--method`); baselines take the preset's layer-averaged ratio."""
    from rich.table import Table

    from . import api

    table = Table(title="pruning methods", title_justify="left")
    table.add_column("method", style="bold")
    table.add_column("what it does")
    for name, description in api.list_methods():
        table.add_row(name, description)
    Console().print(table)


@dev_app.command("make-model")
def make_model_cmd(
    family: str = typer.Argument(..., help="qwen2_vl or llava_onevision."),
    out: Path = typer.Argument(..., help="Folder to write the checkpoint into."),
    size: str = typer.Option("tiny", "--size", help="tiny (tests) or bench (benchmarks)."),
    seed: int = typer.Option(0, "--seed"),
    debug: o.Debug = False,
) -> None:
    """Write a random-weight checkpoint (real config, tokenizer, processor) that loads like a real one.

    Its answers are meaningless text; it exists to exercise every code path offline.
    """
    _state["debug"] = debug
    try:
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
    video: Path = typer.Argument(..., help="A video file (or an image) to profile on."),
    question: str = typer.Option(
        "Describe what happens in the video.", "--question", "-q", help="The question asked (greedy answer)."
    ),
    presets: str = typer.Option(
        "none,1_3,2_9,1_9", "--presets",
        help="Comma-separated presets (names or YAML files); `none` is always measured.",
    ),
    methods: str = typer.Option(
        "vitcop", "--methods", help="Comma-separated methods: vitcop, fastv, divprune, uniform."
    ),
    repeat: int = typer.Option(3, "--repeat", help="Measured runs per (method, preset); medians are reported."),
    warmup: int = typer.Option(1, "--warmup", help="Unmeasured warm-up runs per (method, preset)."),
    model: o.Model = o.DEFAULT_MODEL,
    fps: o.Fps = None,
    frames: o.Frames = None,
    max_frames: o.MaxFrames = 768,
    max_pixels: o.MaxPixels = None,
    min_pixels: o.MinPixels = None,
    max_new_tokens: o.MaxNewTokens = 32,
    device: o.Device = "auto",
    dtype: o.Dtype = "auto",
    attn: o.Attn = "auto",
    json_out: bool = typer.Option(False, "--json", help="Print the profile as one JSON object on stdout (no table)."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write one CSV line per (method, preset) here."),
    plot_path: Optional[Path] = typer.Option(
        None, "--plot",
        help="Also draw speed-up and memory ratio vs layer-averaged ratio (.png/.svg/.pdf; needs matplotlib).",
    ),
    offline: o.Offline = False,
    debug: o.Debug = False,
) -> None:
    """Time every (method, preset) on one clip: load and prepare once, warm up, then interleaved repeats.

    Table on stdout: visual tokens, prefill / TTFT medians (min–max), decode speed, FLOPs, speed-up vs none.
    """
    _state["debug"] = debug
    try:
        if repeat < 1:
            raise InputError("--repeat must be at least 1")
        if warmup < 0:
            raise InputError("--warmup must be >= 0")
        if not question.strip():
            raise InputError("the question is empty")
        preset_list = [p.strip() for p in presets.split(",") if p.strip()]
        method_list = [m.strip() for m in methods.split(",") if m.strip()]
        import time

        from . import api, options, profile as prof, profile_view, video as video_mod

        options.check_run_options(  # fail fast, before loading a model
            preset_list, method_list, fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels,
            min_pixels=min_pixels, max_new_tokens=max_new_tokens,
        )
        video_mod.check_path(str(video))
        if plot_path is not None:
            from .plot import check_plot_path

            check_plot_path(plot_path)
        if csv_path is not None and (csv_path.is_dir() or not csv_path.parent.is_dir()):
            raise InputError(f"--csv {csv_path}: " + (
                "is a folder; give a file name" if csv_path.is_dir() else f"folder {csv_path.parent} does not exist"))
        api.quiet_library_logs(debug)
        with err.status(f"loading {escape(model)} …", spinner="dots"):
            session = api.load(model, device=device, dtype=dtype, attn=attn, offline=offline)
            started = time.perf_counter()
            visual = video_mod.load_visual(video, fps=2.0 if fps is None else fps, frames=frames, max_frames=max_frames)
            decode_s = time.perf_counter() - started
            prepared = session.prepare(visual, question, max_pixels=max_pixels, min_pixels=min_pixels)
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
            )
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
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        if isinstance(exc, typer.Exit):
            raise
        _fail(exc)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
