"""``vitcop profile``: every (method, preset) on one prepared clip, interleaved, as one dataclass.

Contract:

- :func:`run_order` (pure) is the schedule. The entries are the shared baseline ``(none, none)``
  first, then every ``(method, preset)`` with ``preset != none`` (presets outer, methods inner,
  duplicates dropped). Round ``r`` (warm-up rounds first, then the measured repeats) runs all
  entries in that fixed order rotated left by ``r``, so slow machine drift (thermal, other
  processes) is spread over every entry instead of favouring whichever runs first.
- The baseline is measured exactly once per round whatever ``methods`` holds: at preset ``none``
  every method is the identity (the engine hooks nothing but an observer), so ``(fastv, none)``
  would be the same run as ``(vitcop, none)``. Its row has ``method == preset == "none"``. It is
  always measured, even when ``presets`` leaves ``none`` out, since every ratio is taken against it.
- :func:`run_profile` runs the schedule through ``Session.generate`` (greedy) on inputs prepared
  once, and reduces each entry's measured runs to a :class:`ProfileRow`: medians with min-max,
  the pruning report (identical every run), speed-ups against the baseline and whether the greedy
  answer's token ids equal the baseline's.
- Peak memory. On CUDA, ``Session.generate`` resets the peak statistics before every run, so each
  run's max allocated bytes are its own; a row reports the max over its measured runs and
  ``memory_ratio`` = row / baseline (weights included, so the ratio is diluted by them). On CPU
  the only honest figure is the process' peak RSS, a lifetime high-water mark that cannot be
  reset: it says nothing about one run (the first large run sets it for every later one). So on
  CPU rows carry ``peak_memory_bytes = None`` and ``memory_ratio = None`` and the result carries
  the whole profile's ``process_peak_rss_bytes`` once. (Python-level tracers such as tracemalloc
  do not see torch's allocator, so they are not a substitute.)
- Sampling. Greedy by default; with ``temperature > 0`` every run is seeded with ``seed`` (when
  given) so runs stay comparable and ``matches_none`` / ``answers_consistent`` stay meaningful.
- A row whose runs carry a warning about the layer-averaged ratio (a method that cannot reach the
  requested budget on this model) keeps it in ``ratio_warning``; the table marks that row.
- ``to_dict()`` starts with ``"schema": "vitcop.profile/2"`` (:data:`SCHEMA`).
- Accuracy (``--answers``): :mod:`vitcop_cli.profile.answers` fills ``accuracy`` (with
  ``answers_correct`` / ``answers_total``) per row after the timed runs; ``None`` without it.
- :func:`to_csv` writes one line per row (nested spreads flattened to ``*_median/_min/_max``, the phase
  medians to ``phases_*``).
"""

from __future__ import annotations

import csv
import statistics
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, NamedTuple, Sequence, TextIO

from ..options import check_run_options, unique_names
from ..phase_times import PhaseTimes

SCHEMA = "vitcop.profile/2"  # /2: ttft_s includes video decode and preprocess; model_ttft_s
RATIO_WARNING = "layer-averaged ratio"  # the phrase the library's budget-miss warning carries
BASELINE = "none"
DEFAULT_PRESETS = ("none", "1_3", "2_9", "1_9")
DEFAULT_METHODS = ("vitcop",)
MEMORY_CUDA = "cuda_max_allocated"
MEMORY_CPU = "process_peak_rss"
CPU_MEMORY_NOTE = (
    "CPU: peak memory is the process' peak RSS, a lifetime high-water mark that cannot be reset per run, "
    "so the per-run peak memory and its ratio to none are n/a on CPU"
)
CUDA_MEMORY_NOTE = (
    "CUDA: peak memory is torch.cuda.max_memory_allocated, reset before every run (max over a row's runs); "
    "it includes the weights, which dilute the ratio"
)


class RunSlot(NamedTuple):
    """One ``Session.generate`` call of the schedule."""

    round: int  # 0-based; warm-up rounds come first
    warmup: bool
    method: str  # "none" for the shared baseline
    preset: str


@dataclass
class Spread:
    """Median and range of one timing over a row's measured runs (seconds)."""

    median: float
    min: float
    max: float
    values: list[float]


@dataclass
class ProfileRow:
    method: str  # "none" for the shared baseline (no pruning)
    preset: str  # as given: a built-in name or a YAML path
    runs: int  # measured runs (warm-up excluded)
    # visual tokens (the pruning report, the same every run)
    n_visual: int  # N entering Stage I
    after_stage1: int  # V, at the LLM's entry
    after_stage2: int  # Rs, from shallow_layer
    after_stage3: int  # Rd, from deep_layer
    shallow_layer: int | None
    deep_layer: int | None
    layer_averaged_visual: float
    layer_averaged_ratio: float  # layer_averaged_visual / N
    target_ratio: float  # the preset's nominal layer-averaged ratio (1 for none)
    # LLM prefill FLOPs (computed from the real per-layer sequence lengths)
    prefill_flops: float
    prefill_flops_unpruned: float
    flops_ratio: float
    # measured
    vision_encoder_s: Spread
    prefill_s: Spread  # LLM prefill = first forward - vision encoder (pruning included)
    ttft_s: Spread  # the wait a user sees: video decode + preprocess (once per clip) + model_ttft_s
    model_ttft_s: Spread  # vision encoder + prefill
    decode_tokens_per_s: float | None  # median; None when every run stopped after one token
    pruning_s: float  # median time inside the pruning hooks
    phases: PhaseTimes  # median of each phase of the time to the first token over the measured runs
    peak_memory_bytes: int | None  # CUDA: max allocated over the row's runs; None on CPU
    # against the baseline
    prefill_speedup: float | None  # median prefill(none) / median prefill(row)
    ttft_speedup: float | None  # median ttft_s of none / of the row: the whole wait
    model_ttft_speedup: float | None  # median model_ttft_s of none / of the row
    flops_speedup: float  # predicted prefill speed-up: 1 / flops_ratio
    memory_ratio: float | None  # peak(row) / peak(none); None on CPU
    answer: str
    generated_tokens: int
    matches_none: bool  # greedy token ids equal the baseline's
    answers_consistent: bool  # every run of this row (warm-up included) gave the same ids
    ratio_warning: str | None = None  # the run's warning when the method missed the requested ratio
    # --answers (vitcop_cli.profile.answers): labelled questions answered correctly under this row
    answers_correct: int | None = None
    answers_total: int | None = None
    accuracy: float | None = None


@dataclass
class ProfileResult:
    model: str
    model_type: str
    device: str
    dtype: str
    attn_implementation: str
    video: str
    kind: str  # "video" or "image"
    frames: int
    processed_grid: list[int] | None
    question: str
    prompt_tokens: int
    n_visual: int
    presets: list[str]
    methods: list[str]
    repeat: int
    warmup: int
    max_new_tokens: int
    memory_measure: str  # MEMORY_CUDA or MEMORY_CPU
    memory_note: str
    process_peak_rss_bytes: int | None  # CPU: lifetime peak RSS at the end of the profile
    model_load_s: float | None
    video_decode_s: float | None
    preprocess_s: float
    profile_s: float  # wall time of every run, warm-up included
    rows: list[ProfileRow]
    warnings: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    temperature: float = 0.0  # 0 = greedy
    top_p: float | None = None
    seed: int | None = None  # torch seed set before every run (None: not seeded)
    answers_file: str | None = None  # --answers: the labelled questions file (None: no accuracy)
    answers_questions: int | None = None  # --answers: labelled questions about this clip

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "ProfileResult":
        """The inverse of :meth:`to_dict` (e.g. to re-render or re-plot a saved ``--json``)."""
        d = {k: v for k, v in d.items() if k != "schema"}
        spreads = ("vision_encoder_s", "prefill_s", "ttft_s", "model_ttft_s")
        nested = {**dict.fromkeys(spreads, Spread), "phases": PhaseTimes}
        rows = [ProfileRow(**{k: nested[k](**v) if k in nested else v for k, v in r.items()}) for r in d["rows"]]
        return cls(**{**d, "rows": rows})

    def row(self, method: str, preset: str) -> ProfileRow:
        for r in self.rows:
            if r.method == method and r.preset == preset:
                return r
        raise KeyError((method, preset))

    @property
    def baseline(self) -> ProfileRow:
        return self.row(BASELINE, BASELINE)


# ---- schedule ------------------------------------------------------------------------------
def entries(methods: Sequence[str], presets: Sequence[str]) -> list[tuple[str, str]]:
    """(method, preset) of every row, in the fixed order: the baseline first, then presets x methods
    (methods inner, so rows at the same budget sit together)."""
    pruned = [p for p in unique_names(presets) if p != BASELINE]
    return [(BASELINE, BASELINE)] + [(m, p) for p in pruned for m in unique_names(methods)]


def run_order(methods: Sequence[str], presets: Sequence[str], repeat: int, warmup: int = 0) -> list[RunSlot]:
    """The interleaved schedule: ``warmup + repeat`` rounds, round ``r`` = :func:`entries` rotated by ``r``."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    if warmup < 0:
        raise ValueError("warmup must be >= 0")
    base = entries(methods, presets)
    out = []
    for r in range(warmup + repeat):
        shift = r % len(base)
        out += [RunSlot(r, r < warmup, m, p) for m, p in base[shift:] + base[:shift]]
    return out


# ---- measurement ---------------------------------------------------------------------------
def run_profile(
    session,
    prepared,
    presets: Sequence[str] = DEFAULT_PRESETS,
    methods: Sequence[str] = DEFAULT_METHODS,
    repeat: int = 3,
    warmup: int = 1,
    max_new_tokens: int = 32,
    on_progress: Callable[[int, int, RunSlot | None], None] | None = None,
    *,
    video_decode_s: float | None = None,
    temperature: float = 0.0,
    top_p: float | None = None,
    seed: int | None = None,
) -> ProfileResult:
    """Run :func:`run_order`'s schedule on ``prepared`` and reduce it to a :class:`ProfileResult`.

    ``on_progress(done, total, slot)`` is called before each run (``slot`` about to run) and once
    at the end with ``slot=None``. Bad presets / methods raise :class:`InputError` before any run.
    """
    from .. import api
    from ..errors import InputError
    from ..session.runtime import peak_rss_bytes

    if repeat < 1:
        raise InputError("--repeat must be at least 1")
    if warmup < 0:
        raise InputError("--warmup must be >= 0")
    methods, presets = unique_names(methods), unique_names(presets)
    check_run_options(presets, methods, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    check = getattr(session, "check_preset", api.check_preset)  # against the model's depth, before any run
    loaded = {p: check(p) for p in [BASELINE, *presets]}

    schedule = run_order(methods, presets, repeat, warmup)
    measured: dict[tuple[str, str], list] = {}
    ids_seen: dict[tuple[str, str], list[list[int]]] = {}
    started = time.perf_counter()
    for i, slot in enumerate(schedule):
        if on_progress:
            on_progress(i, len(schedule), slot)
        method = api.DEFAULT_METHOD if slot.method == BASELINE else slot.method
        result = session.generate(
            prepared, preset=loaded[slot.preset], method=method, max_new_tokens=max_new_tokens,
            temperature=temperature, top_p=top_p, seed=seed, video_decode_s=video_decode_s or 0.0,
        )  # the clip's decode (measured once) is part of every row's wait
        key = (slot.method, slot.preset)
        ids_seen.setdefault(key, []).append(result.generated_ids)
        if not slot.warmup:
            measured.setdefault(key, []).append(result)
    profile_s = time.perf_counter() - started
    if on_progress:
        on_progress(len(schedule), len(schedule), None)

    cuda = session.device.type == "cuda"
    base_runs = measured[(BASELINE, BASELINE)]
    base = _reduce(BASELINE, BASELINE, 1.0, base_runs, ids_seen[(BASELINE, BASELINE)], None, cuda)
    rows = [base] + [
        _reduce(m, p, loaded[p].ratio, measured[(m, p)], ids_seen[(m, p)], (base, base_runs[0].generated_ids), cuda)
        for m, p in entries(methods, presets)[1:]
    ]
    first = base_runs[0]
    return ProfileResult(
        model=session.name,
        model_type=session.model_type,
        device=str(session.device),
        dtype=first.dtype,
        attn_implementation=session.attn_implementation,
        video=prepared.visual.path,
        kind=prepared.visual.kind,
        frames=first.visual.frames,
        processed_grid=first.visual.processed_grid,
        question=prepared.question,
        prompt_tokens=first.tokens.prompt,
        n_visual=base.n_visual,
        presets=presets,
        methods=methods,
        repeat=repeat,
        warmup=warmup,
        max_new_tokens=max_new_tokens,
        memory_measure=MEMORY_CUDA if cuda else MEMORY_CPU,
        memory_note=CUDA_MEMORY_NOTE if cuda else CPU_MEMORY_NOTE,
        process_peak_rss_bytes=None if cuda else peak_rss_bytes(),
        model_load_s=session.load_s,
        video_decode_s=video_decode_s,
        preprocess_s=prepared.preprocess_s,
        profile_s=profile_s,
        rows=rows,
        warnings=list(first.warnings),
        versions=dict(first.versions),
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    )


def _spread(values: list[float]) -> Spread:
    return Spread(median=statistics.median(values), min=min(values), max=max(values), values=list(values))


def _median_phases(runs):
    """The median of each phase of the time to the first token over ``runs`` (AskResults)."""
    return PhaseTimes(**{
        f.name: statistics.median(getattr(r.timings.phases, f.name) for r in runs) for f in fields(PhaseTimes)
    })


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def _reduce(method, preset, target_ratio, runs, ids, baseline, cuda: bool) -> ProfileRow:
    p = runs[0].pruning
    prefill = _spread([r.timings.prefill_s for r in runs])
    ttft = _spread([r.timings.ttft_s for r in runs])
    model_ttft = _spread([r.timings.model_ttft_s for r in runs])
    rates = [r.timings.decode_tokens_per_s for r in runs if r.timings.decode_tokens_per_s is not None]
    peak = max(r.memory.peak_allocated_bytes for r in runs) if cuda else None
    if baseline is None:  # the baseline itself
        base_row, base_ids = None, runs[0].generated_ids
    else:
        base_row, base_ids = baseline
    return ProfileRow(
        method=method,
        preset=preset,
        runs=len(runs),
        n_visual=int(p.n_visual),
        after_stage1=int(p.after_stage1),
        after_stage2=int(p.after_stage2),
        after_stage3=int(p.after_stage3),
        shallow_layer=p.shallow_layer,
        deep_layer=p.deep_layer,
        layer_averaged_visual=float(p.layer_averaged_visual),
        layer_averaged_ratio=float(p.layer_averaged_ratio),
        target_ratio=float(target_ratio),
        prefill_flops=float(p.prefill_flops),
        prefill_flops_unpruned=float(p.prefill_flops_unpruned),
        flops_ratio=float(p.flops_ratio),
        vision_encoder_s=_spread([r.timings.vision_encoder_s for r in runs]),
        prefill_s=prefill,
        ttft_s=ttft,
        model_ttft_s=model_ttft,
        decode_tokens_per_s=statistics.median(rates) if rates else None,
        pruning_s=statistics.median(r.timings.pruning_s for r in runs),
        phases=_median_phases(runs),
        peak_memory_bytes=peak,
        prefill_speedup=1.0 if base_row is None else _ratio(base_row.prefill_s.median, prefill.median),
        ttft_speedup=1.0 if base_row is None else _ratio(base_row.ttft_s.median, ttft.median),
        model_ttft_speedup=1.0 if base_row is None else _ratio(base_row.model_ttft_s.median, model_ttft.median),
        flops_speedup=1.0 / float(p.flops_ratio) if p.flops_ratio else 1.0,
        memory_ratio=None if peak is None else (1.0 if base_row is None else _ratio(peak, base_row.peak_memory_bytes)),
        answer=runs[0].answer,
        generated_tokens=len(runs[0].generated_ids),
        matches_none=runs[0].generated_ids == base_ids,
        answers_consistent=all(i == ids[0] for i in ids),
        ratio_warning=next((w for r in runs for w in r.warnings if RATIO_WARNING in w), None),
    )


# ---- machine-readable output ---------------------------------------------------------------
def csv_columns(row: ProfileRow) -> dict:
    """A row flattened for CSV: ``Spread`` fields become ``<name>_median/_min/_max`` (values dropped), the
    phases ``phases_<phase>``."""
    out = {}
    for key, value in asdict(row).items():
        if isinstance(value, dict):
            out.update({f"{key}_{k}": v for k, v in value.items() if k != "values"})
        else:
            out[key] = value
    return out


def to_csv(result: ProfileResult, file: str | Path | TextIO) -> None:
    """Write a header and one line per (method, preset) to ``file`` (a path or an open text file)."""
    lines = [csv_columns(r) for r in result.rows]
    if isinstance(file, (str, Path)):
        with open(file, "w", newline="", encoding="utf-8") as f:
            _write_csv(lines, f)
    else:
        _write_csv(lines, file)


def _write_csv(lines: list[dict], f: TextIO) -> None:
    writer = csv.DictWriter(f, fieldnames=list(lines[0]))
    writer.writeheader()
    for line in lines:
        writer.writerow({k: "" if v is None else v for k, v in line.items()})


def to_json(result: ProfileResult) -> str:
    import json

    return json.dumps(result.to_dict(), indent=2)
