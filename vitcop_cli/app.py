"""``vitcop`` command line: parse, call the library (:mod:`vitcop_cli.api`), render. Nothing else.

``ask``, ``presets``, ``methods``, ``models`` and ``dev make-model`` live here; ``batch``, ``profile``, ``serve``,
``chat`` and ``doctor`` live in their subpackages (``<package>/cli.py``) and are registered below. What they
share (the stderr console, the one-line failure, the pre-load checks) is :mod:`vitcop_cli.cli.common`.

Exit statuses: 0 success, 2 usage / input errors, 1 runtime failures. Expected failures print one
line on stderr; ``--debug`` shows the full traceback of anything.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from .batch.cli import batch_cmd
from .chat.cli import chat_cmd
from .cli import option_types as o
from .cli.common import (
    check_local_media,
    check_model,
    check_prefix_cache,
    err,
    fail,
    media_file,
    prefix_store,
    read_question,
    state,
)
from .cli.help_format import VitcopGroup
from .doctor.cli import doctor_cmd
from .errors import InputError
from .profile.cli import profile_cmd
from .serve.cli import serve_cmd

app = typer.Typer(
    help="Ask vision-language models about videos, with ViTCoP visual-token pruning and an honest cost report.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    cls=VitcopGroup,
)
dev_app = typer.Typer(help="Developer tools: offline random-weight checkpoints.", no_args_is_help=True, cls=VitcopGroup)
app.add_typer(dev_app, name="dev")



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


@app.command()
def ask(
    video: str = typer.Argument(
        ..., metavar="VIDEO",
        help="A video (mp4, mkv, webm, avi, mov, ...) or image (jpg, png, webp) file, or an http(s):// URL "
        "(no user:password@). Images up to 50 megapixels; images and frames up to a 200:1 aspect ratio.",
    ),
    questions: list[str] = typer.Argument(
        ..., metavar="QUESTION",
        help="One or more questions to ask about it, answered in order; - reads one question from stdin.",
    ),
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
    resize: o.Resize = "fast",
    decoder: o.Decoder = "decord",
    decode_device: o.DecodeDevice = "cpu",
    prefix_cache: o.PrefixCache = None,
    prefix_cache_gb: o.PrefixCacheGb = 4.0,
    stream: bool = typer.Option(True, "--stream/--no-stream", help="Stream the answer as it is generated."),
    json_out: bool = typer.Option(
        False, "--json",
        help="Print one JSON object (answer + full report) on stdout; with several questions one compact JSON "
        "object per line, in question order.",
    ),
    offline: o.Offline = False,
    debug: o.Debug = False,
) -> None:
    """Answer each QUESTION about VIDEO, in order; answers go to stdout, the cost report to stderr.

    The clip is decoded once and its pruned prefix (system prompt + visual tokens, prefilled once under the preset) is kept: every question is answered on that one prefix, exactly as if asked alone. With several questions each answer is labelled with its question and its report says whether the prefix was reused and the time that saved; a failure stops at that question, the answers before it printed.

    With --json: one JSON object on stdout (answer and whole report), one compact line per question when there are several; each warning also goes to stderr as one 'warning: ...' line.
    """
    state["debug"] = debug
    try:
        from .cli.signals import terminate_as_interrupt

        with terminate_as_interrupt():
            from . import options

            _one_of("--preset", preset, "preset")
            _one_of("--method", method, "method")
            questions = _read_questions(questions)
            options.check_text(system, "--system")
            options.check_run_options(  # fail fast (no torch imported yet), before loading a model
                [preset], [method], fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels,
                min_pixels=min_pixels, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                seed=seed, system=system, resize=resize, decoder=decoder, decode_device=decode_device,
            )
            check_local_media(video)
            check_prefix_cache(prefix_cache, prefix_cache_gb)
            offline = check_model(model, offline)
            media = media_file(video, progress=not json_out)
            from . import api
            from .cli import report
            from .cli.answer_lines import prefix_line

            api.quiet_library_logs(debug)
            with err.status(f"loading {escape(model)} …", spinner="dots") if not json_out else nullcontext():
                session = api.load(model, device=device, dtype=dtype, attn=attn, offline=offline)
            startup_s = _since_process_start()
            session.check_lengths(max_new_tokens)  # before the clip is decoded (open checks the rest)
            clip = session.open(
                media, preset=preset, method=method, fps=fps, frames=frames, max_frames=max_frames,
                max_pixels=max_pixels, min_pixels=min_pixels, system=system, resize=resize, decoder=decoder,
                decode_device=decode_device, prefix_store=prefix_store(prefix_cache, prefix_cache_gb),
            )
            streaming = stream and not json_out
            several = len(questions) > 1
            warned: set[str] = set()
            for i, question in enumerate(questions, 1):
                if several and not json_out:  # label the answer with its question (a blank line between)
                    gap = "\n" if i > 1 else ""
                    print(f"{gap}Q{i}: {' '.join(question.split())}", flush=True)
                result = clip.ask(
                    question, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                    on_text=_write_stdout if streaming else None, seed=seed,
                )
                if i == 1:
                    result.timings.startup_s = startup_s  # the process start-up is the first answer's wait
                if json_out:
                    print(json.dumps(result.to_dict()) if several else report.to_json(result), flush=True)
                    for w in result.warnings:  # also in the JSON; stderr keeps them visible, one line each, once
                        if w not in warned:
                            warned.add(w)
                            print(f"warning: {' '.join(w.split())}", file=sys.stderr)
                    continue
                print("" if streaming else result.answer, flush=True)
                report.render(result, err)
                label = f"answer {i}/{len(questions)}" if several else ""
                err.print(escape(prefix_line(result, label)), highlight=False)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        if isinstance(exc, typer.Exit):
            raise
        fail(exc)


def _read_questions(questions: list[str]) -> list[str]:
    """Every QUESTION checked (text, not empty) before anything loads; ``-`` (once at most) read from stdin."""
    if questions.count("-") > 1:
        raise InputError("QUESTION - (stdin) can be given once; stdin holds one question")
    return [read_question(q) for q in questions]


def _one_of(option: str, value: str, what: str) -> None:
    """``ask`` runs one preset and one method: a comma list gets a pointer to the commands that run several."""
    if "," in value and not Path(value).exists():
        raise InputError(
            f"{option} {value}: ask runs one {what}; to compare several use `vitcop profile` or `vitcop batch`"
        )


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
    state["debug"] = debug
    try:
        from .cli import report
        from .models.preset_table import preset_table

        rows = preset_table(model=model, n_visual=visual_tokens, offline=offline)
        report.render_presets(rows, Console(), model=model, n_visual=visual_tokens)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        if isinstance(exc, typer.Exit):
            raise
        fail(exc)


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


@app.command("models")
def models_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
) -> None:
    """List the built-in demo models (--model tiny:<family>): random weights, built offline on first use.

    Each is what `vitcop dev make-model FAMILY DIR --size SIZE` writes, cached under $VITCOP_CACHE/models
    (else $HF_HOME/vitcop/models, else ~/.cache/vitcop/models). Their answers are meaningless text; the
    frames, token counts, pruning and timings are real.
    """
    import json

    from rich.table import Table

    from .models.demo_models import cache_root, listing

    rows = listing()
    if json_out:
        print(json.dumps({"schema": "vitcop.models/1", "cache": str(cache_root()), "models": rows}, indent=2))
        return
    table = Table(title="built-in demo models (random weights)", title_justify="left")
    table.add_column("--model", style="bold", no_wrap=True)
    table.add_column("LLM")
    table.add_column("cached")
    notes = {r["size"]: r["note"] for r in rows}
    for r in rows:
        table.add_row(r["name"], f"{r['layers']} layers", "yes" if r["cached"] else "no (built on first use)")
    out = Console()
    out.print(table)
    for size, note in notes.items():
        out.print(f"{size}: {note}", highlight=False)
    out.print(f"cache: {escape(str(cache_root()))}", highlight=False, soft_wrap=True)
    stale = sum(len(r["other_builds"]) for r in rows)
    if stale:
        out.print(f"{stale} build(s) for another vitcop / transformers release are also there (unused; "
                  "safe to delete)", highlight=False)


@dev_app.command("make-model")
def make_model_cmd(
    family: str = typer.Argument(..., help="qwen2_vl, llava_onevision, qwen2_5_vl, qwen3_vl, qwen3_vl_moe, qwen3_5 or qwen3_5_moe."),
    out: Path = typer.Argument(..., help="Folder to write the checkpoint into."),
    size: str = typer.Option("tiny", "--size", help="tiny (tests) or bench (benchmarks)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights (0 to 2**63 - 1)."),
    debug: o.Debug = False,
) -> None:
    """Write a random-weight checkpoint (real config, tokenizer, processor) that loads like a real one.

    Its answers are meaningless text; it exists to exercise every code path offline.
    """
    state["debug"] = debug
    try:
        from .options import check_seed

        check_seed(seed)
        from .api import quiet_library_logs
        from .models.devmodels import make_model

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
        fail(exc)
    err.print(f"wrote {family} ({size}) random-weight checkpoint to {escape(str(path))}", highlight=False, soft_wrap=True)


# commands that span several files live in their own subpackage, with the code they drive
app.command("batch")(batch_cmd)
app.command("profile")(profile_cmd)
app.command("serve")(serve_cmd)
app.command("chat")(chat_cmd)
app.command("doctor")(doctor_cmd)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(prog_name="vitcop")
    except SystemExit as exc:  # a worker thread still inside torch would abort finalisation (status 134)
        from .cli.process_exit import exit_process

        exit_process(exc.code)
        raise


if __name__ == "__main__":
    main()
