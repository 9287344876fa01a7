"""What each lmms-eval sample log keeps of vitcop's cost report, and the run-level averages.

Contract:

- :func:`sample_report` turns one :class:`~vitcop_cli.result.AskResult` into a JSON-ready dict,
  the ``vitcop`` entry of the sample's ``token_counts`` in lmms-eval's per-sample log::

      {"model", "preset", "method", "visual": {"kind", "frames", "sampling_fps", "processed_grid"},
       "tokens": {"prompt", "visual", "generated"},
       "visual_tokens": {"input": N, "stage1": V, "stage2": Rs, "stage3": Rd},   # None without a report
       "pruning": PruningReport as a dict (layer-averaged ratio, cache lengths, prefill FLOPs) | None,
       "timings": Timings as a dict (ttft_s, vision_encoder_s, prefill_s, decode_s, ...),
       "prefix": PrefixInfo as a dict (kept, reused, saved_s, ...) | None,
       "ttft_s": float}

  Accuracy (from lmms-eval's scoring) and cost (from here) thus come out of the same run, per sample.
- :func:`run_averages` averages the numeric cost figures over the samples of one
  ``generate_until`` call, for lmms-eval's ``throughput`` block in the results JSON; among them
  ``vitcop_prefix_reuse_ratio`` (the share of answers given on a reused pruned prefix) and
  ``vitcop_prefix_saved_s`` (the time reuse saved, per answer). :func:`prefix_totals` gives the
  count and the seconds, for the run log.
"""

from __future__ import annotations

from dataclasses import asdict

from vitcop_cli.result import AskResult

__all__ = ["prefix_totals", "run_averages", "sample_report"]


def sample_report(result: AskResult) -> dict:
    """The per-sample cost report of ``result`` (see the module docstring)."""
    pruning = asdict(result.pruning) if result.pruning is not None else None
    stages = None
    if result.pruning is not None:
        p = result.pruning
        stages = {"input": p.n_visual, "stage1": p.after_stage1, "stage2": p.after_stage2, "stage3": p.after_stage3}
    return {
        "model": result.model,
        "preset": result.preset,
        "method": result.method,
        "visual": {
            "kind": result.visual.kind,
            "frames": result.visual.frames,
            "sampling_fps": result.visual.sampling_fps,
            "processed_grid": result.visual.processed_grid,
        },
        "tokens": asdict(result.tokens),
        "visual_tokens": stages,
        "pruning": pruning,
        "timings": asdict(result.timings),
        "prefix": asdict(result.prefix) if result.prefix is not None else None,
        "ttft_s": result.timings.ttft_s,
    }


def _reused(report: dict) -> bool:
    return bool((report.get("prefix") or {}).get("reused"))


def prefix_totals(reports: list[dict]) -> tuple[int, float]:
    """(answers given on a reused prefix, seconds those reuses saved) over ``reports``."""
    reused = [r for r in reports if _reused(r)]
    return len(reused), sum(r["prefix"]["saved_s"] for r in reused)


def run_averages(reports: list[dict]) -> dict[str, float]:
    """Mean TTFT, prefill, visual-token, FLOPs and prefix-reuse figures over ``reports`` (empty dict for none)."""
    if not reports:
        return {}
    columns: dict[str, list[float]] = {
        "ttft_s": [r["ttft_s"] for r in reports],
        "prefill_s": [r["timings"]["prefill_s"] for r in reports],
        "visual_tokens_in": [r["tokens"]["visual"] for r in reports],
    }
    pruned = [r for r in reports if r["pruning"] is not None]
    if pruned:
        columns["visual_tokens_after_stage3"] = [r["pruning"]["after_stage3"] for r in pruned]
        columns["layer_averaged_ratio"] = [r["pruning"]["layer_averaged_ratio"] for r in pruned]
        columns["prefill_flops_ratio"] = [r["pruning"]["flops_ratio"] for r in pruned]
    if any(r.get("prefix") is not None for r in reports):
        columns["prefix_reuse_ratio"] = [1.0 if _reused(r) else 0.0 for r in reports]
        columns["prefix_saved_s"] = [r["prefix"]["saved_s"] if _reused(r) else 0.0 for r in reports]
    return {f"vitcop_{k}": sum(v) / len(v) for k, v in columns.items() if v}
