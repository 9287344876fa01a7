"""``vitcop profile --plot``: speed-up and memory ratio against the layer-averaged ratio, per method.

matplotlib is an optional extra (``pip install 'vitcop[plot]'``); it is imported only here, only
when a plot is asked for, and :func:`require_matplotlib` turns its absence into an
:class:`~vitcop_cli.errors.InputError` (exit 2) before any model is loaded. Drawing goes through
``matplotlib.figure.Figure`` and the Agg canvas, never pyplot, so no GUI backend or global state
is touched.
"""

from __future__ import annotations

from pathlib import Path

from pruning.stats import RATIO_TOLERANCE

from ..errors import InputError
from .run import BASELINE, ProfileResult

MISSING = "--plot needs matplotlib, which is not installed; install it with: pip install 'vitcop[plot]'"


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise InputError(MISSING) from None
    return matplotlib


def check_plot_path(path: str | Path) -> Path:
    """``path`` if matplotlib can write its format and its folder exists, else an InputError."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    formats = FigureCanvasAgg.get_supported_filetypes()
    ext = path.suffix.lower().lstrip(".")
    if ext not in formats:
        shown = f"'.{ext}'" if ext else "no extension"
        raise InputError(f"--plot {path}: unsupported image format ({shown}); use .png, .svg or .pdf")
    if path.is_dir():
        raise InputError(f"--plot {path}: is a folder; give a file name such as profile.png")
    if not path.parent.is_dir():
        raise InputError(f"--plot {path}: folder {path.parent} does not exist")
    return path


def _series(result: ProfileResult, method: str) -> list:
    """The method's rows sorted by layer-averaged ratio, with the shared baseline as its right end."""
    rows = [r for r in result.rows if r.method == method] + [result.baseline]
    return sorted(rows, key=lambda r: r.layer_averaged_ratio)


MARKERS = ["o", "s", "^", "D", "v", "P", "X", "h"]
JITTER = 0.01  # x offset between methods, so lines that coincide stay visible side by side


def missed(row) -> bool:
    """The method missed its preset's ratio: flagged by the library, or off its nominal tick by more than
    the library's relative tolerance (``pruning.stats.RATIO_TOLERANCE``, the rule of the ratio warning)."""
    return row.method != BASELINE and (
        bool(getattr(row, "ratio_warning", None))
        or abs(row.layer_averaged_ratio - row.target_ratio) > RATIO_TOLERANCE * row.target_ratio
    )


def plot_profile(result: ProfileResult, path: str | Path) -> Path:
    """Draw :func:`figure` into ``path`` (format from its extension) and return it."""
    path = Path(path)
    figure(result).savefig(path, dpi=120)
    return path


def figure(result: ProfileResult):
    """The profile figure (a ``matplotlib.figure.Figure`` on an Agg canvas).

    Left: LLM prefill speed-up vs ``none`` (measured median, solid; FLOPs-predicted, dashed) against
    the layer-averaged ratio, one colour and one marker shape per method, the baseline (1, 1) shared
    by every line. Right (CUDA only): peak memory / peak memory of ``none``. On CPU there is no
    per-run peak (see :mod:`vitcop_cli.profile`), so the right panel is left out and a footnote says why.

    Readability rules (checked by tests and by eye): presets are named on the top axis at their
    nominal ratio, never next to a point; a point that missed its preset's ratio gets a ring (legend
    entry "missed its ratio") and the footnote names it, so no label can cover a marker. Methods are
    drawn with distinct markers, slightly offset in x (±:data:`JITTER`, said in the axis label) and
    translucent, the first ones thicker, so lines that coincide (baselines with equal FLOPs) stay
    visible. The title is wrapped to the figure's width.
    """
    require_matplotlib()
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    methods = list(dict.fromkeys(r.method for r in result.rows if r.method != BASELINE)) or list(result.methods)
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    color = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    marker = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(methods)}
    shift = {m: (i - (len(methods) - 1) / 2) * JITTER for i, m in enumerate(methods)}
    width = {m: 1.2 + 1.6 * (len(methods) - 1 - i) / max(len(methods) - 1, 1) for i, m in enumerate(methods)}
    memory = any(r.memory_ratio is not None for r in result.rows)

    figsize = (13, 6.2) if memory else (8.5, 6.4)
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if memory else 1, squeeze=False)[0]
    xlabel = "layer-averaged visual tokens / N   (1 = no pruning)" + (
        f"\nmethods drawn ±{JITTER:g} apart in x so coinciding lines stay visible" if len(methods) > 1 else "")

    ticks = {r.preset: r.target_ratio for r in result.rows}  # the baseline last: it is drawn as "none" at 1
    ticks = {p: x for p, x in ticks.items() if p != BASELINE} | {BASELINE: 1.0}
    misses = [r for r in result.rows if missed(r)]

    def decorate(ax, ylabel: str, title: str) -> None:
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlim(0, 1.05)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10.5)
        ax.grid(True, alpha=0.3)
        top = ax.secondary_xaxis("top")
        top.set_xticks(list(ticks.values()), labels=list(ticks), fontsize=9)
        top.tick_params(length=3)
        top.set_xlabel("preset (at its requested ratio)", fontsize=9)

    def ring_misses(ax, rows, ys, m) -> None:
        pts = [(r.layer_averaged_ratio + shift[m], y) for r, y in zip(rows, ys) if y is not None and missed(r)]
        if pts:
            ax.plot(*zip(*pts), linestyle="none", marker="o", markersize=15, markerfacecolor="none",
                    markeredgecolor=color[m], markeredgewidth=1.4, zorder=4)

    def series(m, key):
        rows = [r for r in _series(result, m) if getattr(r, key) is not None]
        return rows, [r.layer_averaged_ratio + shift[m] for r in rows], [getattr(r, key) for r in rows]

    ax = axes[0]
    top = 1.0
    for m in methods:
        rows, x, predicted = series(m, "flops_speedup")
        ax.plot(x, predicted, linestyle="--", marker=marker[m], markerfacecolor="white", color=color[m],
                linewidth=width[m] * 0.7, alpha=0.85, zorder=2)
        rows_m, x_m, measured = series(m, "prefill_speedup")
        if measured:
            ax.plot(x_m, measured, linestyle="-", marker=marker[m], color=color[m], linewidth=width[m],
                    alpha=0.85, zorder=3)
            ring_misses(ax, rows_m, measured, m)
        top = max([top, *predicted, *measured])
    ax.set_ylim(0, top * 1.15)
    decorate(ax, "LLM prefill speed-up vs none  (×)", "LLM prefill speed-up: measured (median) vs FLOPs-predicted")
    handles = [Line2D([], [], color=color[m], marker=marker[m], linewidth=2.0, label=m) for m in methods] + [
        Line2D([], [], color="black", linestyle="-", label="measured"),
        Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="white", label="FLOPs-predicted"),
    ]
    if misses:
        handles.append(Line2D([], [], linestyle="none", marker="o", markersize=11, markerfacecolor="none",
                              markeredgecolor="black", label="missed its ratio (see below)"))
    ax.legend(handles=handles, loc="upper left", fontsize=8.5, framealpha=0.9)

    if memory:
        ax = axes[1]
        low = 1.0
        for m in methods:
            rows, x, ys = series(m, "memory_ratio")
            ax.plot(x, ys, marker=marker[m], color=color[m], linewidth=width[m], alpha=0.85, label=m)
            ring_misses(ax, rows, ys, m)
            low = min([low, *ys])
        ax.set_ylim(min(0.0, low), 1.1)
        decorate(ax, "peak memory / peak memory of none", "Peak GPU memory (max allocated, weights included)")
        ax.legend(loc="lower right", fontsize=8.5, framealpha=0.9)

    notes = []
    if misses:
        by_method: dict[str, list] = {}
        for r in misses:
            by_method.setdefault(r.method, []).append(r)
        notes.append("missed its ratio: " + "; ".join(
            f"{m} " + ", ".join(f"{r.preset} reached {r.layer_averaged_ratio:.3f} (asked {r.target_ratio:.3f})"
                                for r in rows)
            for m, rows in by_method.items()))
    if not memory:
        notes.append("memory ratio not plotted: n/a per run on CPU (the process' peak RSS is a lifetime "
                     "high-water mark, not a per-run peak)")
    if notes:
        chars = int(figsize[0] * 15)
        fig.supxlabel("\n".join(textwrap.fill(n, chars) for n in notes), fontsize=8, color="dimgrey")

    runs = f"median of {result.repeat} run{'s' if result.repeat != 1 else ''}"
    title = (f"vitcop profile · {Path(result.model).name or result.model} · N = {result.n_visual} visual tokens "
             f"({result.frames} frames) · {result.device} {result.dtype} · {runs}")
    fig.suptitle(textwrap.fill(title, int(figsize[0] * 10)), fontsize=12)
    return fig
