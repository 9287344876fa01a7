"""Render an :class:`~vitcop_cli.result.AskResult` as a rich report (stderr) or JSON (stdout).

Every rendering fits 80 columns. :data:`LEGEND` explains the budget symbols (N, V, Rs, Rd) the
report, ``vitcop presets`` and ``vitcop profile`` use. The ask report shows the process start-up
(interpreter + imports + model load) on its own row, apart from the per-question ``total``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:  # importing result pulls in torch; ``vitcop presets`` must not
    from ..result import AskResult

LEGEND = (
    "N: visual tokens from the vision encoder; V: after Stage I, entering the LLM; Rs: kept from the "
    "shallow layer Ls; Rd: kept from the deep layer Ld (V→Rs→Rd: the three stages in order)."
)


def to_json(result: "AskResult") -> str:
    return json.dumps(result.to_dict(), indent=2)


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f} s"


def _bytes(x: int | None) -> str:
    return "-" if x is None else f"{x / 2**20:,.1f} MiB"


def _flops(x: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if x >= scale:
            return f"{x / scale:,.2f} {unit}"
    return f"{x:,.0f} FLOP"


def _stages(p) -> str:
    """'N 432 → 216 at LLM entry → 120 at layer 2 → 24 at layer 6' (stages that did nothing omitted)."""
    parts = [f"N {p.n_visual}"]
    if p.after_stage1 != p.n_visual:
        parts.append(f"{p.after_stage1} at LLM entry")
    for count, before, layer in ((p.after_stage2, p.after_stage1, p.shallow_layer), (p.after_stage3, p.after_stage2, p.deep_layer)):
        if layer is not None and count != before:
            parts.append(f"{count} at layer {layer}")
    return " → ".join(parts) if len(parts) > 1 else f"N {p.n_visual} (nothing pruned)"


#: (label, field) of the phases of the time to the first token, in the order they happen
PHASE_LABELS = (
    ("video decode", "video_decode_s"), ("preprocess", "preprocess_s"), ("generate set-up", "generate_setup_s"),
    ("encoder", "vision_encoder_s"), ("pre-LLM", "pre_llm_s"), ("LLM layers", "llm_layers_s"),
    ("pruning", "pruning_s"), ("question set-up", "question_setup_s"), ("first token", "first_token_s"),
)


def _phases(ph) -> str:
    """The phase breakdown in one wrapped cell: each phase's time and share of the total."""
    total = ph.total_s or 1.0
    parts = [f"{label} {_s(getattr(ph, key))} ({getattr(ph, key) / total:.0%})" for label, key in PHASE_LABELS
             if key != "question_setup_s" or getattr(ph, key)]  # two-phase answers that built their prefix
    return " · ".join(parts) + f" = {_s(ph.total_s)}"


def render(result: "AskResult", console: Console) -> None:
    """A two-column table of everything ``ask`` measured."""
    r, v, t, m = result, result.visual, result.timings, result.memory
    method = "" if r.method == "vitcop" else f" · method {r.method}"
    demo = " (random-weight demo model)" if r.demo_model else ""
    table = Table(title=f"vitcop · {escape(r.model)}{demo} · preset {escape(r.preset)}{method}", show_header=False,
                  title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    if v.kind == "video":
        span = f"{v.timestamps[0]:.2f}–{v.timestamps[-1]:.2f} s of {v.duration_s:.2f} s" if v.timestamps else "-"
        fps = f"{v.sampling_fps:.2f} fps" if v.sampling_fps else "-"
        table.add_row("frames", f"{v.frames} sampled at {fps} ({span}), source {v.width}x{v.height} @ {v.source_fps:.2f} fps")
    else:
        table.add_row("image", f"{v.width}x{v.height}")
    if v.processed_grid:
        table.add_row("patch grid (t,h,w)", " x ".join(map(str, v.processed_grid)))
    table.add_row("tokens", f"prompt {r.tokens.prompt} (visual {r.tokens.visual}), generated {r.tokens.generated}")
    p = r.pruning
    if p is not None:
        table.add_row("visual tokens", _stages(p))
        table.add_row("layer-averaged", f"{p.layer_averaged_visual:,.1f} visual tokens ({p.layer_averaged_ratio:.3f} of N)")
        if p.encoder_patches is not None:
            total, encoded = p.encoder_patches
            table.add_row("encoder patches", f"{encoded} of {total} encoded" + (
                f" ({total - encoded} repeated pixel-for-pixel: outputs reused)" if encoded < total else ""))
        table.add_row(
            "LLM prefill FLOPs",
            f"{_flops(p.prefill_flops)} vs {_flops(p.prefill_flops_unpruned)} unpruned ({p.flops_ratio:.3f}x)",
        )
    if t.startup_s is not None:
        imports = None if t.model_load_s is None else max(t.startup_s - t.model_load_s, 0.0)
        table.add_row("start-up", f"{_s(t.startup_s)} (imports {_s(imports)} + model load {_s(t.model_load_s)})")
    else:
        table.add_row("model load", _s(t.model_load_s))
    table.add_row("video decode", _s(t.video_decode_s))
    table.add_row("preprocess", _s(t.preprocess_s))
    table.add_row("vision encoder", _s(t.vision_encoder_s))
    table.add_row("prefill (LLM)", _s(t.prefill_s))
    table.add_row("time to first token", f"{_s(t.ttft_s)} (video decode + preprocess + model {_s(t.model_ttft_s)})")
    if t.phases is not None:
        table.add_row("  where it went", _phases(t.phases))
    rate = "-" if t.decode_tokens_per_s is None else f"{t.decode_tokens_per_s:.1f} tokens/s"
    table.add_row("decode", f"{_s(t.decode_s)} ({rate})")
    table.add_row("pruning overhead", _s(t.pruning_s))
    table.add_row("total (question)", f"{_s(t.total_s)} (video decode + preprocess + generate)")
    if m.peak_allocated_bytes is not None:
        table.add_row("peak memory", f"{_bytes(m.peak_allocated_bytes)} allocated, {_bytes(m.peak_reserved_bytes)} reserved")
    else:
        table.add_row("peak memory", f"{_bytes(m.peak_rss_bytes)} process peak RSS")
    table.add_row("device", f"{r.device} · {r.dtype} · {r.attn_implementation}")
    console.print(table)
    if p is not None:
        console.print("[dim]N: visual tokens from the encoder, before pruning.[/]", highlight=False)
    for w in r.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)  # wrapped: fits 80 columns


def render_presets(rows, console: Console, *, model: str | None, n_visual: int) -> None:
    """The ``vitcop presets`` table (each preset's ratios and budgets at this depth and N), then
    one line per preset describing it — kept out of the table so it reads at 80 columns."""
    from ..defaults import DEFAULT_MODEL

    depth = rows[0].n_layers if rows else 0
    where = f"{escape(model)} ({depth} LLM layers)" if model else f"{DEFAULT_MODEL} ({depth} LLM layers)"
    console.print(f"pruning presets for {where}, N = {n_visual} visual tokens", highlight=False)
    if not model:
        console.print("(the default model's depth; --model M for another model's)", highlight=False)
    table = Table()
    for col in ("preset", "ratio", "keep", "V", "Rs @ layer", "Rd @ layer", "layer avg (of N)"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        at = lambda n, layer: f"{n}" if layer is None else f"{n} @ {layer}"  # noqa: E731
        table.add_row(
            r.name, f"{r.ratio:.3f}", f"{r.vision_keep:.2f}", str(r.V), at(r.Rs, r.shallow_layer),
            at(r.Rd, r.deep_layer), f"{r.layer_averaged:,.0f} ({r.layer_averaged / r.n_visual:.3f})",
        )
    console.print(table)
    for r in rows:
        console.print(f"[bold]{r.name}[/]: {escape(r.description)}")
    if rows and rows[0].full_attention is not None:
        full = ", ".join(map(str, rows[0].full_attention))
        console.print(
            f"Hybrid LLM: full attention only at layers {full} (the others are linear attention, without keys). "
            "A key-norm cut at layer L reads layer L-1's keys, so Ls and Ld are snapped to the nearest layer "
            "after a full-attention one (ties: the shallower), and Rs / Rd come from the snapped layers.",
            highlight=False,
        )
    console.print(f"[dim]{LEGEND}[/]", highlight=False)
