"""The result objects ``ask`` returns; ``--json`` prints ``AskResult.to_dict()`` verbatim.

Units: seconds for ``*_s``, bytes for ``*_bytes``, FLOPs as floats. ``None`` means "not measured
here" (e.g. CUDA memory on a CPU run), never zero. ``to_dict()`` starts with ``"schema":
"vitcop.ask/2"`` (:data:`SCHEMA`); the number changes when a field changes meaning or goes away.
Every field is documented in README.md's JSON table; :func:`json_fields` lists them as dotted
paths and a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, field

from pruning.stats import PruningReport

from .phase_times import PhaseTimes

SCHEMA = "vitcop.ask/2"  # /2: ttft_s includes video decode and preprocess (was model_ttft_s)


@dataclass
class MemoryReport:
    device: str
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    peak_rss_bytes: int | None = None


@dataclass
class VisualInfo:
    path: str
    kind: str  # "video" or "image"
    frames: int  # frames decoded and handed to the processor (1 for an image; a repeat to fill a patch not counted)
    sampling_fps: float | None  # frames used per second of clip
    source_fps: float | None
    duration_s: float | None
    timestamps: list[float]  # seconds, of every frame used
    width: int  # source resolution
    height: int
    processed_grid: list[int] | None = None  # e.g. Qwen2-VL's (t, h, w) patch grid


@dataclass
class PrefixInfo:
    """The pruned prefix (system prompt + visual, prefilled once under the preset) this answer ran on."""

    kept: bool  # a prefix was prefilled and kept apart from the question (False: one single-pass prefill)
    reused: bool  # it came from an earlier question (memory or disk), not built for this one
    source: str  # "built" (for this question), "memory", "disk", or "none" (not kept)
    tokens: int  # prompt tokens it covers (system + visual, before pruning)
    kv_tokens: list[int]  # per decoder layer, tokens it holds (the survivors)
    bytes: int  # its KV cache (and linear-attention states)
    bytes_unpruned: int  # the same prefix unpruned (every layer holding all its tokens)
    saved_s: float  # time not spent because it was reused: decode + preprocess + encoder + its prefill
    reason: str | None = None  # why no prefix was kept, or why a kept one was not used


@dataclass
class TokenCounts:
    prompt: int  # prompt tokens including the visual placeholders
    visual: int  # visual placeholder tokens in the prompt (before any pruning)
    generated: int


@dataclass
class Timings:
    model_load_s: float | None
    video_decode_s: float
    preprocess_s: float
    vision_encoder_s: float
    prefill_s: float  # LLM prefill (first forward minus the vision encoder), pruning included
    ttft_s: float  # the wait a user sees: question start to the first token = decode + preprocess + model_ttft_s
    model_ttft_s: float  # generate() start to the end of the first forward: encoder + prefill
    decode_s: float
    decode_tokens_per_s: float | None
    pruning_s: float  # time spent inside the pruning hooks (part of the encoder/prefill times)
    total_s: float
    # process start (interpreter, imports) to the model loaded; set by the CLI, None in library use
    startup_s: float | None = None
    phases: PhaseTimes | None = None  # the time to the first token, phase by phase


@dataclass
class AskResult:
    answer: str
    question: str
    model: str
    model_type: str
    preset: str
    method: str
    device: str
    dtype: str
    attn_implementation: str
    visual: VisualInfo
    tokens: TokenCounts
    timings: Timings
    memory: MemoryReport
    pruning: PruningReport | None
    generated_ids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    seed: int | None = None  # torch seed set before generating (None: not seeded)
    prefix: PrefixInfo | None = None  # the pruned prefix the answer ran on (None: not recorded)
    demo_model: bool = False  # a built-in random-weight demo model (tiny:<family>): the answer is meaningless

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, **asdict(self)}


def json_fields(cls=AskResult, prefix: str = "") -> list[str]:
    """Dotted paths of every field ``cls.to_dict()`` can hold (nested dataclasses expanded)."""
    out = ["schema"] if cls is AskResult and not prefix else []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        out.append(path)
        nested = [t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if dataclasses.is_dataclass(t)]
        if nested:
            out += json_fields(nested[0], path + ".")
    return out
