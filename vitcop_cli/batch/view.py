"""Rendering for ``vitcop batch``: the stderr console, the progress bar, the summary table, closing notes.

Names from the file system (ids, clip names, paths) and error messages are shown through
:func:`~.inputs.printable` (control characters escaped) and rich's ``escape`` (no markup).
The summary table fits 80 columns and hides nothing: a method or preset label of up to 20
characters stays on one line, other cells wrap between words, a word too long for its column
folds onto the next line; nothing ends in "…".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ..questions.inputs import printable


class BatchConsole:
    """A stderr console on a duplicate of file descriptor 2.

    While decord decodes (in the prefetch thread) fd 2 is redirected into a temporary file to catch
    FFmpeg's chatter; a console writing to ``sys.stderr`` would lose progress-bar frames into it.
    Falls back to the usual ``err`` console when stderr is not fd 2 (e.g. under a test runner).
    """

    def __enter__(self) -> Console:
        self._stream = None
        try:
            if sys.stderr.fileno() == 2:
                self._stream = os.fdopen(
                    os.dup(2), "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                    errors="replace",
                )
        except (AttributeError, OSError, ValueError):
            self._stream = None
        return Console(stderr=True) if self._stream is None else Console(file=self._stream)

    def __exit__(self, *exc_info) -> bool:
        if self._stream is not None:
            try:
                self._stream.close()
            except OSError:
                pass
        return False


def run_with_progress(console: Console, session, items, out: Path, *, debug: bool = False, **options):
    """``batch.run_batch`` under a rich progress bar (done / total, failures, elapsed, ETA, throughput)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from . import runner as batch

    class Throughput(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            if not speed:
                return Text("-/s", style="progress.data.speed")
            shown = f"{speed:.2f} results/s" if speed >= 1 else f"{1 / speed:.1f} s/result"
            return Text(shown, style="progress.data.speed")

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed[/]"), TimeElapsedColumn(), TextColumn("eta"),
        TimeRemainingColumn(), Throughput(), console=console, transient=True,
    ) as bar:
        task = bar.add_task("batch", total=None, failed=0)

        def on_progress(ev: "batch.BatchProgress") -> None:
            if ev.kind == "start":
                if ev.skipped or ev.skipped_failed:
                    failed_note = f", {ev.skipped_failed} earlier failure(s) left alone" if ev.skipped_failed else ""
                    bar.console.print(
                        f"resuming {escape(printable(out))}: {ev.skipped} result(s) already there{failed_note}; "
                        f"{ev.total} to run" + (f" on {ev.ranks} ranks" if ev.ranks > 1 else ""),
                        highlight=False, soft_wrap=True,
                    )
                bar.update(task, total=ev.total, completed=0, failed=0)
                return
            if ev.error is not None:
                where = f" [rank {ev.rank}]" if ev.ranks > 1 else ""
                bar.console.print(
                    f"[yellow]failed[/] {escape(printable(ev.item_id))} ({escape(printable(ev.method))} "
                    f"{escape(printable(ev.preset))}){escape(where)}: {escape(printable(ev.error))}",
                    highlight=False, soft_wrap=True,
                )
                if debug and ev.exception is not None:
                    from rich.traceback import Traceback

                    bar.console.print(
                        Traceback.from_exception(type(ev.exception), ev.exception, ev.exception.__traceback__)
                    )
            if ev.kind == "job" and ev.item is not None:
                name = printable(Path(ev.video).name)
                what = f"{ev.method} {ev.preset}" if ev.method != "none" and len(options["methods"]) > 1 else ev.preset
                bar.update(task, description=escape(f"{name} · {printable(what)}"))
            bar.update(task, completed=ev.done, failed=ev.failed)

        return batch.run_batch(session, items, out, on_progress=on_progress, **options)


_ONE_LINE = 20  # a method or preset label up to this long (e.g. name@8-hex-fingerprint) keeps one line


def render_summary(summary, console: Console) -> None:
    """The ``vitcop batch`` summary: one row per (method, preset), plus a total row when there are several."""
    from rich import box
    from rich.table import Table

    several = len(summary.groups) > 1
    pruning_methods = {g.method for g in summary.groups if g.method != "none"}  # none: the unpruned preset
    show_method = len(pruning_methods) > 1 or pruning_methods - {"vitcop"}
    title = f"vitcop batch · {escape(printable(summary.model))} · {summary.items} item{'s' if summary.items != 1 else ''}"
    # 80 columns: the profile table's compact box (one space between columns). What ran (method, preset
    # label) stays on one line when it is at most _ONE_LINE long; other cells wrap between words. A word
    # too long for its column folds onto the next line: nothing is ever cut with "…"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=0, pad_edge=False,
                  collapse_padding=True, show_edge=False)

    def one_line(values) -> bool:
        return max(len(v) for v in values) <= _ONE_LINE

    columns = [("method", "left", one_line([g.method for g in summary.groups]))] if show_method else []
    columns += [
        ("preset", "left", one_line([g.preset for g in summary.groups])), ("ok", "right", False),
        ("failed", "right", False), ("skipped\n(done)", "right", False), ("accuracy", "right", False),
        ("latency s\nmean / p95", "right", False), ("visual tokens\nN → kept (ratio)", "right", False),
    ]
    for col, justify, no_wrap in columns:
        table.add_column(col, justify=justify, overflow="fold", no_wrap=no_wrap)
    rows = list(summary.groups) + ([summary.overall] if several else [])
    for i, g in enumerate(rows):
        accuracy = "-" if g.accuracy is None else f"{g.accuracy:.3f} ({g.correct}/{g.scored})"
        failed = str(g.failed) + (f" (+{g.skipped_failed} old)" if g.skipped_failed else "")
        latency = "-" if g.latency_mean_s is None else f"{g.latency_mean_s:.3f} / {g.latency_p95_s:.3f}"
        tokens = (
            "-" if g.visual_kept_mean is None
            else f"{g.visual_tokens_mean:.0f} → {g.visual_kept_mean:.1f} ({g.kept_ratio_mean:.3f})"
            if g.visual_tokens_mean is not None and g.kept_ratio_mean is not None
            else f"{g.visual_kept_mean:.1f}"
        )
        cells = [escape(g.method)] if show_method else []
        cells += [
            escape(g.preset), str(g.ok), f"[red]{failed}[/]" if g.failed else failed, str(g.skipped), accuracy,
            latency, tokens,
        ]
        table.add_row(*cells, end_section=several and i == len(summary.groups) - 1)
    console.print(table)


def render_notes(summary, console: Console) -> None:
    """Closing lines: results written, throughput, prefix reuses, repeats, torn line cut, failures."""
    rate = summary.ok + summary.failed
    notes = [
        f"{rate} result{'s' if rate != 1 else ''} in {summary.wall_s:.1f} s"
        + (f" ({rate / summary.wall_s:.2f}/s)" if rate and summary.wall_s > 0 else "")
        + (f" on {summary.ranks} ranks" if summary.ranks > 1 else "")
        + f"; results in {escape(printable(summary.out))}"
    ]
    if summary.prefix_reuses:
        notes.append(
            f"{summary.prefix_reuses} answer{'s' if summary.prefix_reuses != 1 else ''} reused the pruned prefix of "
            f"an earlier question on the same clip ({summary.prefix_saved_s:.1f} s of decode, preprocess and "
            "prefill saved)"
        )
    if summary.duplicates:
        notes.append(f"{summary.duplicates} input item(s) repeat an earlier (video, question) and were run once")
    if summary.torn_bytes:
        notes.append(f"cut off a torn last line ({summary.torn_bytes} bytes) left by an interrupted run")
    if summary.skipped_failed:
        notes.append(f"[yellow]{summary.skipped_failed} earlier failure(s) left alone (--skip-failed)[/]")
    if summary.failed:
        notes.append(f"[yellow]{summary.failed} failed[/]: see the \"error\" field of their lines; run again to retry")
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)
