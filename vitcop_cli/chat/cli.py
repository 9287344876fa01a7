"""The ``vitcop chat`` command (registered on the CLI app by :mod:`vitcop_cli.app`): parse, check, load the model,
open the clip once, hand over to :class:`~.loop.ChatLoop`.

Contract: every option is checked before the model loads (bad ones: one line, exit 2), the model's length
limit before the clip is decoded. The clip is decoded, encoded and pruned once (``Session.open``); the loop
then answers each line on its kept prefix. Exit status: the loop's (0 at end of input or ``/quit``; with piped
input the status of the first line that went wrong), 2 / 1 for a failure before the chat starts, 130 after
Ctrl-C at the prompt, 143 / 129 after SIGTERM / SIGHUP. Importing this module is cheap (no torch).
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import typer
from rich.markup import escape

from ..cli import option_types as o
from ..cli.common import check_local_media, check_model, check_prefix_cache, err, fail, media_file, prefix_store, state
from ..errors import InputError


def chat_cmd(
    video: str = typer.Argument(
        ..., metavar="VIDEO",
        help="A video or image file, or an http(s):// URL (as for `vitcop ask`).",
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
    json_out: bool = typer.Option(
        False, "--json", help="One JSON line per answer (answer + full report) on stdout instead of the streamed text.",
    ),
    offline: o.Offline = False,
    debug: o.Debug = False,
) -> None:
    """Chat about VIDEO: questions line by line, follow-ups included; answers stream to stdout, a short report per answer to stderr.

    The clip is decoded once and its pruned prefix (system prompt + visual tokens, prefilled once under the preset) is kept: every question, follow-ups included, is answered on that one prefix, exactly as if asked afresh.

    Commands: /reset (forget the conversation, keep the clip), /preset P (re-open the clip under P), /help, /quit. Ctrl-D ends the chat; Ctrl-C cancels the answer being generated (at the prompt it ends the chat, status 130). Piped input works too (no prompt); the exit status is then that of the first line that went wrong, else 0.
    """
    state["debug"] = debug
    try:
        from ..cli.signals import terminate_as_interrupt

        with terminate_as_interrupt():
            code = _chat(video, model=model, preset=preset, method=method, device=device, dtype=dtype, attn=attn,
                         offline=offline, debug=debug, json_out=json_out,
                         open_options=dict(method=method, fps=fps, frames=frames, max_frames=max_frames,
                                           max_pixels=max_pixels, min_pixels=min_pixels, system=system,
                                           resize=resize, decoder=decoder, decode_device=decode_device),
                         prefix_cache=(prefix_cache, prefix_cache_gb),
                         generation=dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                         seed=seed))
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        if isinstance(exc, typer.Exit):
            raise
        fail(exc)
    raise typer.Exit(code)


def _chat(video: str, *, model, preset, method, device, dtype, attn, offline, debug, json_out, open_options: dict,
          generation: dict, prefix_cache: tuple) -> int:
    from .. import options

    for option, value, what in (("--preset", preset, "preset"), ("--method", method, "method")):
        if "," in value and not Path(value).exists():
            raise InputError(f"{option} {value}: a chat runs one {what}; /preset P switches presets as you go")
    options.check_run_options([preset], [method], **{k: v for k, v in open_options.items() if k != "method"},
                              **generation)
    check_local_media(video)
    check_prefix_cache(*prefix_cache)
    offline = check_model(model, offline)
    media = media_file(video, progress=not json_out)
    from .. import api
    from .loop import ChatLoop
    from .source import ClipSource

    api.quiet_library_logs(debug)
    busy = (lambda what: err.status(what, spinner="dots")) if not json_out else (lambda what: nullcontext())
    with busy(f"loading {escape(model)} …"):
        session = api.load(model, device=device, dtype=dtype, attn=attn, offline=offline)
    session.check_lengths(generation["max_new_tokens"])  # before the clip is decoded (open checks the rest)
    source = ClipSource(session, media, prefix_store=prefix_store(*prefix_cache), **open_options)
    with busy("decoding and pruning the clip once …"):
        clip = source.open(preset)
    loop = ChatLoop(source, clip, preset, generation, json_out=json_out, stdin=sys.stdin, stdout=sys.stdout,
                    console=err)
    if loop.interactive:
        _banner(clip, media, model, preset)
    return loop.run()


def _banner(clip, media: Path, model: str, preset: str) -> None:
    """What was opened, and how to go on (a terminal on stdin only)."""
    v = clip.visual
    what = f"{v.kind} {media.name}" + (f", {len(v.timestamps)} frames" if v.kind == "video" else "")
    kept = (f"; its pruned prefix is kept ({clip.nbytes / 2**20:,.1f} MiB)" if clip.prefix is not None
            else f"; {clip.method} reads each question, so no prefix is kept")
    err.print(f"chat about {escape(what)} · {escape(model)} · preset {escape(preset)}{kept}. "
              "/help lists the commands, Ctrl-D ends.", highlight=False, soft_wrap=True)
