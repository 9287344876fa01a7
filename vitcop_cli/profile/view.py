"""Rendering for ``vitcop profile``: the 80-column table and its notes; the plot writer."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape


def write_plot(result, path) -> None:
    """Draw the profile plot (matplotlib is imported only when a plot is asked for)."""
    from .plot import plot_profile  # matplotlib only when a plot is asked for

    plot_profile(result, path)


def render_profile(result, console: Console) -> None:
    """The ``vitcop profile`` table (fits 80 columns): rows grouped by preset, the baseline first; each
    timing is a median with its min–max underneath. A ``!`` after the layer average marks a row whose
    method missed the requested ratio (its warning is in the notes). Notes on the symbols, the
    columns and on memory follow it."""
    from rich import box
    from rich.table import Table

    from ..cli.report import LEGEND, _bytes
    from .run import RATIO_WARNING

    slowest = max(r.ttft_s.max for r in result.rows)
    unit = "s" if slowest >= 1 else "ms"

    def t(x: float) -> str:
        if unit == "s":
            return f"{x:.2f}"
        x *= 1000
        return f"{x:.1f}" if x < 100 else f"{x:.0f}"

    def spread(s) -> str:
        return f"{t(s.median)}\n[dim]{t(s.min)}–{t(s.max)}[/]"

    def times(x) -> str:
        return "-" if x is None else f"{x:.2f}×"

    cuda = result.memory_measure != "process_peak_rss"
    flop_unit, scale = next(((u, k) for u, k in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6))
                             if result.baseline.prefill_flops >= k), ("FLOP", 1.0))
    title = (
        f"vitcop profile · {escape(result.model)} · {result.frames} frame{'s' if result.frames != 1 else ''}, "
        f"N = {result.n_visual} visual tokens · {result.device} {result.dtype} · "
        f"median (min–max) of {result.repeat} interleaved run{'s' if result.repeat != 1 else ''}"
        f" after {result.warmup} warm-up"
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=0, pad_edge=False,
                  collapse_padding=True, show_edge=False)
    columns = [
        ("preset\n method", "left"), ("visual\nV→Rs→Rd", "right"), ("layer\navg", "right"),
        (f"prefill\n{unit}", "right"), (f"TTFT\n{unit}", "right"), ("dec.\ntok/s", "right"),
        (f"LLM\n{flop_unit}", "right"), ("speed\n-up", "right"), ("FLOPs\npred.", "right"),
    ]
    mem_unit, mem_scale = ("GiB", 2**30) if (result.baseline.peak_memory_bytes or 0) >= 2**30 else ("MiB", 2**20)
    if cuda:
        columns.append((f"peak\n{mem_unit}", "right"))
    columns.append(("same", "center"))
    scored = getattr(result, "answers_file", None) is not None  # --answers: accuracy per row
    if scored:
        columns.append(("acc.", "right"))
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold")
    # the stage counts go on two lines when one of them would not fit in 11 characters
    sep = "\n" if any(len(f"{r.after_stage1}{r.after_stage2}{r.after_stage3}") > 9 for r in result.rows) else ""
    preset = None
    for r in result.rows:
        if r.preset != preset:
            if preset is not None:
                table.add_section()
            if r.method != "none":
                table.add_row(f"[bold]{escape(r.preset)}[/]")
            preset = r.preset
        rate = "-" if r.decode_tokens_per_s is None else f"{r.decode_tokens_per_s:.1f}"
        cells = [
            "[bold]none[/]" if r.method == "none" else f" {escape(r.method)}",
            f"{r.after_stage1}→{r.after_stage2}{sep}→{r.after_stage3}",
            f"{r.layer_averaged_ratio:.3f}" + ("[bold yellow]![/]" if r.ratio_warning else ""),
            spread(r.prefill_s), spread(r.ttft_s), rate, f"{r.prefill_flops / scale:,.1f}",
            times(r.prefill_speedup), times(r.flops_speedup),
        ]
        if cuda:
            mem = "-" if r.peak_memory_bytes is None else f"{r.peak_memory_bytes / mem_scale:,.2f}"
            cells.append(f"{mem}\n[dim]{times(r.memory_ratio)}[/]")
        cells.append("[green]yes[/]" if r.matches_none else "[yellow]no[/]")
        if scored:
            cells.append("-" if r.accuracy is None else f"{r.accuracy:.0%}\n[dim]{r.answers_correct}/{r.answers_total}[/]")
        table.add_row(*cells)
    console.print(table)
    notes = [
        "TTFT: the whole wait, video decode + preprocess (the clip's, the same in every row) + the model's first "
        "token. prefill: the model's time to first token minus the vision encoder. speed-up: median prefill of none / of the row. "
        "FLOPs pred.: LLM prefill FLOPs of none / of the row. same: the same greedy tokens as none." + (
            " peak: max allocated, and its ratio to none underneath." if cuda else ""),
        result.memory_note + (
            f"; the process peak RSS over the whole profile was {_bytes(result.process_peak_rss_bytes)}"
            if result.process_peak_rss_bytes is not None else ""
        ) + ".",
    ]
    notes.insert(0, LEGEND)
    if scored:
        n = result.answers_questions
        notes.append(f"acc.: the {n} labelled question{'s' if n != 1 else ''} of {escape(result.answers_file)} "
                     "about this clip answered correctly under the row (one untimed run each).")
    for r in result.rows:
        if r.ratio_warning:
            notes.append(f"[bold yellow]![/] {escape(r.method)} {escape(r.preset)}: {escape(r.ratio_warning)}")
    unstable = [f"{r.method} {r.preset}" for r in result.rows if not r.answers_consistent]
    if unstable:
        notes.append(f"[yellow]answers differed between runs of[/] {escape(', '.join(unstable))}")
    notes += [f"[yellow]warning:[/] {escape(w)}" for w in result.warnings if RATIO_WARNING not in w]
    for note in notes:
        console.print(note, highlight=False)
    console.print(_phase_table(result, t, unit))


def _phase_table(result, t, unit: str):
    """Where each row's time to the first token went (medians): the generate() part of the phases, pruning
    work taken out of the phase it ran in and shown once (``timings.phases`` of ask)."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"time to first token by phase, {unit} (medians)", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)
    for col in ("row", "encoder", "pre-LLM", "LLM layers", "pruning", "set-up + 1st token", "sum"):
        table.add_column(col, justify="left" if col == "row" else "right", overflow="fold")
    for r in result.rows:
        ph = r.phases
        other = ph.generate_setup_s + ph.question_setup_s + ph.first_token_s
        parts = (ph.vision_encoder_s, ph.pre_llm_s, ph.llm_layers_s, ph.pruning_s, other)
        label = "none" if r.method == "none" else f"{r.preset} {r.method}"
        table.add_row(escape(label), *(t(x) for x in parts), t(sum(parts)))
    return table

