"""The ``vitcop profile`` command (registered on the CLI app by :mod:`vitcop_cli.app`): parse,
validate, load the model and prepare the clip once, run :func:`vitcop_cli.profile.run_profile`,
render the table (or ``--json``), write ``--csv`` / ``--plot``.

Contract: bad options, media, ``--answers`` or output paths fail with one line and exit 2 before a
model loads; presets and ``--max-new-tokens`` are checked against the model before any clip work.
With ``--json`` the result is printed before the files are written, so a file that cannot be
written never loses the measurements. Importing this module is cheap (no torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..cli import option_types as o
from ..cli.common import check_local_media, check_model, err, fail, media_file, read_question, state
from ..errors import InputError


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
    resize: o.Resize = "fast",
    decoder: o.Decoder = "decord",
    decode_device: o.DecodeDevice = "cpu",
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
    state["debug"] = debug
    try:
        from ..cli.signals import terminate_as_interrupt

        with terminate_as_interrupt():
            _profile(
                video, question, presets, methods, repeat, warmup, model, fps, frames, max_frames, max_pixels,
                min_pixels, max_new_tokens, temperature, top_p, seed, system, device, dtype, attn, json_out,
                csv_path, plot_path, offline, debug, answers=answers,
                decoding=dict(resize=resize, decoder=decoder, decode_device=decode_device),
            )
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        if isinstance(exc, typer.Exit):
            raise
        fail(exc)


def _profile(
    video, question, presets, methods, repeat, warmup, model, fps, frames, max_frames, max_pixels, min_pixels,
    max_new_tokens, temperature, top_p, seed, system, device, dtype, attn, json_out, csv_path, plot_path, offline,
    debug, *, answers=None, decoding: dict,
) -> None:
    if repeat < 1:
        raise InputError("--repeat must be at least 1")
    if warmup < 0:
        raise InputError("--warmup must be >= 0")
    question = read_question(question)
    preset_list = [p.strip() for p in presets.split(",") if p.strip()]
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    import time

    from .. import options

    options.check_run_options(  # fail fast (no torch imported yet), before loading a model
        preset_list, method_list, fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels,
        min_pixels=min_pixels, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
        system=system, **decoding,
    )
    if plot_path is not None:
        from .plot import check_plot_path

        check_plot_path(plot_path)
    if csv_path is not None and (csv_path.is_dir() or not csv_path.parent.is_dir()):
        raise InputError(f"--csv {csv_path}: " + (
            "is a folder; give a file name" if csv_path.is_dir() else f"folder {csv_path.parent} does not exist"))
    check_local_media(video)
    media = media_file(video, progress=True)
    labelled_items = None
    if answers is not None:  # a bad answers file fails before the model loads
        from .answers import read_answers

        labelled_items, notes = read_answers(answers, media)
        for note in notes:
            err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    offline = check_model(model, offline)  # config.json only: fast one-line failures before torch loads
    from .. import api
    from . import run as prof
    from . import view as profile_view

    api.quiet_library_logs(debug)
    with err.status(f"loading {escape(model)} …", spinner="dots"):
        session = api.load(model, device=device, dtype=dtype, attn=attn, offline=offline)
        for p in preset_list:  # every preset against the model's depth, once, before any clip work
            session.check_preset(p)
        session.check_lengths(max_new_tokens)
        started = time.perf_counter()
        visual = session.load_visual(media, fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels,
                                     min_pixels=min_pixels, **decoding)
        decode_s = time.perf_counter() - started
        prepared = session.prepare(visual, question, system=system, max_pixels=max_pixels, min_pixels=min_pixels)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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
        from .answers import add_accuracy, prepare_answers

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
