"""``vitcop profile --plot``: speed-up and memory ratio against the layer-averaged ratio, per method.

matplotlib is an optional extra (``pip install 'vitcop[plot]'``); it is imported only here, only
when a plot is asked for, and :func:`require_matplotlib` turns its absence into an
:class:`~vitcop_cli.errors.InputError` (exit 2) before any model is loaded. Drawing goes through
``matplotlib.figure.Figure`` and the Agg canvas, never pyplot, so no GUI backend or global state
is touched.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .profile import BASELINE, ProfileResult

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


def plot_profile(result: ProfileResult, path: str | Path) -> Path:
    """Draw the figure into ``path`` (format from its extension) and return it.

    Left: LLM prefill speed-up vs ``none`` (measured median, solid; FLOPs-predicted, dashed) against
    the layer-averaged ratio, one colour per method, the baseline (1, 1) shared by every line.
    Right (CUDA only): peak memory / peak memory of ``none``. On CPU there is no per-run peak (see
    :mod:`vitcop_cli.profile`), so the right panel is left out and a footnote says why.
    Presets are named on the top axis at their nominal ratio; a point more than 0.03 away from its
    preset's tick (a method that cannot reach the budget) is labelled itself.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    path = Path(path)
    methods = list(result.methods)
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    color = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
    memory = any(r.memory_ratio is not None for r in result.rows)

    fig = Figure(figsize=(13, 5.6) if memory else (8, 5.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if memory else 1, squeeze=False)[0]
    xlabel = "layer-averaged visual tokens / N   (1 = no pruning)"

    ticks = {r.preset: r.target_ratio for r in result.rows}  # the baseline last: it is drawn as "none" at 1
    ticks = {p: x for p, x in ticks.items() if p != BASELINE} | {BASELINE: 1.0}

    def decorate(ax, ylabel: str, title: str) -> None:
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlim(0, 1.05)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=11)
        ax.grid(True, alpha=0.3)
        top = ax.secondary_xaxis("top")
        top.set_xticks(list(ticks.values()), labels=list(ticks), fontsize=9)
        top.tick_params(length=3)

    def label_outliers(ax, rows, ys, m) -> None:
        """Name the presets of points that missed their budget (the top-axis tick); coincident points share a label."""
        labels: dict[tuple[float, float], list[str]] = {}
        for r, y in zip(rows, ys):
            if r.method != BASELINE and y is not None and abs(r.layer_averaged_ratio - r.target_ratio) > 0.03:
                labels.setdefault((r.layer_averaged_ratio, y), []).append(r.preset)
        for (x, y), names in labels.items():
            # to the left: such a point lies right of its target, and its line runs on to the right
            ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(-7, 0), ha="right",
                        va="center", fontsize=8, color=color[m])

    ax = axes[0]
    top = 1.0
    for m in methods:
        rows = _series(result, m)
        x = [r.layer_averaged_ratio for r in rows]
        measured = [r.prefill_speedup for r in rows]
        predicted = [r.flops_speedup for r in rows]
        ax.plot(x, predicted, linestyle="--", marker="o", markerfacecolor="white", color=color[m], linewidth=1.4)
        pts = [(a, b) for a, b in zip(x, measured) if b is not None]
        if pts:
            ax.plot(*zip(*pts), linestyle="-", marker="o", color=color[m], linewidth=2.2)
        label_outliers(ax, rows, measured, m)
        top = max([top, *predicted, *[y for _, y in pts]])
    ax.set_ylim(0, top * 1.12)
    decorate(ax, "LLM prefill speed-up vs none  (×)", "LLM prefill speed-up: measured (median) vs FLOPs-predicted")
    handles = [Line2D([], [], color=color[m], linewidth=2.2, label=m) for m in methods] + [
        Line2D([], [], color="black", linestyle="-", marker="o", label="measured"),
        Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="white", label="FLOPs-predicted"),
    ]
    ax.legend(handles=handles, loc="upper right", fontsize=9, framealpha=0.9)

    if memory:
        ax = axes[1]
        low = 1.0
        for m in methods:
            rows = [r for r in _series(result, m) if r.memory_ratio is not None]
            ys = [r.memory_ratio for r in rows]
            ax.plot([r.layer_averaged_ratio for r in rows], ys, marker="s", color=color[m], linewidth=2.2, label=m)
            label_outliers(ax, rows, ys, m)
            low = min([low, *ys])
        ax.set_ylim(min(0.0, low), 1.1)
        decorate(ax, "peak memory / peak memory of none", "Peak GPU memory (max allocated, weights included)")
        ax.legend(loc="lower right", fontsize=9, framealpha=0.9)
    else:
        fig.supxlabel("memory ratio not plotted: n/a per run on CPU (the process' peak RSS is a lifetime "
                      "high-water mark, not a per-run peak)", fontsize=8, color="dimgrey")

    runs = f"median of {result.repeat} run{'s' if result.repeat != 1 else ''}"
    fig.suptitle(
        f"vitcop profile · {Path(result.model).name or result.model} · N = {result.n_visual} visual tokens "
        f"({result.frames} frames) · {result.device} {result.dtype} · {runs}",
        fontsize=12,
    )
    fig.savefig(path, dpi=120)
    return path
