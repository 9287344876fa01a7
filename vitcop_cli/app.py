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
    model: str = typer.Option("Qwen/Qwen2-VL-2B-Instruct", "--model", "-m", help="Hugging Face id or local folder."),
    preset: str = typer.Option(
        "1_3", "--preset", "-p", help="Pruning preset: none, 1_3, 2_9, 1_9, or a YAML file (see `vitcop presets`)."
    ),
    method: str = typer.Option(
        "vitcop", "--method", help="Pruning method: vitcop, or a baseline (fastv, divprune, uniform) at the same ratio."
    ),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frames sampled per second of clip [default: 2.0]."),
    frames: Optional[int] = typer.Option(None, "--frames", help="Sample exactly N frames (instead of --fps)."),
    max_frames: int = typer.Option(768, "--max-frames", help="Upper bound on sampled frames."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="Per-frame pixel cap (Qwen2-VL)."),
    min_pixels: Optional[int] = typer.Option(None, "--min-pixels", help="Per-frame pixel floor (Qwen2-VL)."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Longest answer, in tokens."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy (deterministic)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling (with --temperature > 0)."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16."),
    attn: str = typer.Option(
        "auto", "--attn", help="auto (flash_attention_2 if installed on CUDA, else sdpa), sdpa, eager, flash_attention_2."
    ),
    stream: bool = typer.Option(True, "--stream/--no-stream", help="Stream the answer as it is generated."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (answer + full report) on stdout."),
    offline: bool = typer.Option(False, "--offline", help="Never download: local files / cache only."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks."),
) -> None:
    """Answer QUESTION about VIDEO; the answer goes to stdout, the cost report to stderr."""
    _state["debug"] = debug
    try:
        if fps is not None and frames is not None:
            raise InputError("--fps and --frames are mutually exclusive; give one of them")
        if frames is not None and frames < 1:
            raise InputError("--frames must be at least 1")
        if fps is not None and fps <= 0:
            raise InputError("--fps must be positive")
        if max_frames < 1:
            raise InputError("--max-frames must be at least 1")
        if top_p is not None and temperature == 0:
            raise InputError("--top-p needs --temperature > 0 (temperature 0 is greedy decoding)")
        from . import api, report, video as video_mod

        video_mod.check_path(str(video))  # fail fast, before loading a model
        api.check_preset(preset)
        api.check_method(method)
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
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks."),
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
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks."),
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


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
