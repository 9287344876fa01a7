"""The whole performance table in one command: every method x preset x attention implementation.

    python benchmarks/gpu_suite.py --family qwen2_vl --shape 7b --frames 64      # on a GPU
    python benchmarks/gpu_suite.py --family qwen2_vl --shape bench --frames 8    # on a CPU, minutes

What it does (nothing is downloaded):

* Model. A random-weight model of ``--family`` built from a config in memory: ``7b`` is the released
  7B checkpoint's architecture (:data:`CONFIGS_7B`: Qwen2-VL-7B-Instruct, Qwen2.5-VL-7B-Instruct,
  Qwen3-VL-8B-Instruct, Qwen3.5-9B (transformers' default Qwen3.5 text config), LLaVA-OneVision-Qwen2-7B),
  random bf16 weights created on the GPU; ``bench`` / ``tiny`` are the LLM / vision shapes of
  ``vitcop_cli.models.devmodels`` with the real patch size, merge and input resolution. The processor is
  ``devmodels.make_processor``: the released checkpoints' image / video resolution around a small
  dev tokenizer (token ids of the config follow it).
* Clip. A synthetic clip (moving squares on a gradient, a little noise), ``--frames`` frames of
  ``--clip-size`` pixels, prepared once through ``Session.prepare`` at the processor's real
  resolution (Qwen2-VL: the video processor's pixel bounds; LLaVA-OneVision: 384 x 384 frames).
* Runs. ``none`` plus ``--presets`` x ``--methods`` (default vitcop, evs, fastv, divprune at 1_3,
  2_9, 1_9) under every attention implementation (sdpa, and flash_attention_2 when installed on
  CUDA; one model, switched with ``set_attn_implementation``). The schedule is
  ``vitcop_cli.profile.run_order`` (warm-up rounds, then repeats; each round rotated), run once per
  implementation inside every round, so drift favours no row. Each run is ``Session.generate``
  (greedy, exactly ``--decode-tokens`` new tokens: ``min_new_tokens`` is set on the random model):
  its CUDA-synchronised clocks give vision-encoder time, LLM prefill (first forward minus the
  vision encoder), TTFT and decode tokens/s; its pruning report gives the FLOPs-predicted prefill
  ratio. Memory (CUDA): peak allocated / reserved over the generate, and the *prefill* peak above
  what was allocated before the run (weights and inputs excluded: the memory pruning can save).
* Table. Medians over the repeats; every ratio is against ``none`` under the same attention in
  the same run: prefill / TTFT speed-up, decode ratio, prefill-memory ratio, FLOPs-predicted
  speed-up and slack = measured prefill ratio / FLOPs-predicted ratio.
* Slack, split (vitcop rows; ``--no-reference`` skips it). Each round also times the survivors-only prefill of
  every vitcop preset and of none (``benchmarks/survivor_reference.py``: the model's own decoder layers on
  exactly the tokens the pruned run kept, no pruning work, on the attention kernel's causal path), so
  slack = kernels x vitcop: kernels = survivors-only ratio / FLOPs ratio (what the hardware makes of layers
  with fewer tokens), vitcop = measured ratio / survivors-only ratio (what vitcop and ``generate`` add).
* Targets (issue 11), for vitcop at 1_9 under each attention: LLM prefill >= 8x faster than none,
  TTFT >= 2.5x, prefill memory <= 0.5x (CUDA only; n/a on CPU), slack <= 1.1x: PASS / FAIL lines.

``--json FILE`` / ``--csv FILE`` write every number. Exit status 1 when any run of a method failed
(its error is printed and recorded), 2 for bad arguments, else 0 (``--strict``: also 1 when a
target fails). Timing numbers on a shared CPU are noisy; the CPU run proves the suite works.
"""

from __future__ import annotations

import argparse
import dataclasses
import csv
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # ``python benchmarks/gpu_suite.py`` without PYTHONPATH
    sys.path.insert(0, str(REPO))

from benchmarks.prefill_ratios import machine_info, print_table  # noqa: E402
from benchmarks.survivor_reference import UNPRUNED, SurvivorReference, split_slack  # noqa: E402
from pruning.adapters import adapter_for  # noqa: E402
from vitcop_cli import api  # noqa: E402
from vitcop_cli.models.devmodels import FAMILIES, LM_SHAPES, VISION_DEPTH, VISION_WIDTH, make_processor  # noqa: E402
from vitcop_cli.profile import BASELINE, run_order  # noqa: E402
from vitcop_cli.session.runtime import flash_attn_installed, resolve_device  # noqa: E402
from vitcop_cli.media.synthetic import synthetic_clip  # noqa: E402

SHAPES = ("7b", "bench", "tiny")
PRESETS = ("1_3", "2_9", "1_9")
METHODS = ("vitcop", "evs", "fastv", "divprune")
QUESTION = "What happens in the video? Describe the motion of every object."
TARGET_PRESET, TARGET_METHOD = "1_9", "vitcop"
TARGETS = {  # issue 11, at 1_9 against none under the same attention implementation
    "prefill_speedup": (">=", 8.0),
    "ttft_speedup": (">=", 2.5),
    "prefill_memory_ratio": ("<=", 0.5),
    "slack": ("<=", 1.1),
}

# The released 7B checkpoints' architectures (config.json of Qwen/Qwen2-VL-7B-Instruct and of
# llava-hf/llava-onevision-qwen2-7b-ov-hf); token ids are set from the dev tokenizer at build time.
CONFIGS_7B = {
    "qwen2_vl": {
        "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6,
                     hidden_act="silu", rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                                         "mrope_section": [16, 24, 24]}),
        "vision": dict(depth=32, embed_dim=1280, hidden_size=3584, mlp_ratio=4, num_heads=16, in_channels=3,
                       patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        "tie_word_embeddings": False,
    },
    "qwen2_5_vl": {  # Qwen/Qwen2.5-VL-7B-Instruct
        "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064, max_position_embeddings=128000, rms_norm_eps=1e-6,
                     hidden_act="silu", rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                                         "mrope_section": [16, 24, 24]}),
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                       hidden_act="silu", in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                       window_size=112, fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
        "tie_word_embeddings": False,
    },
    "qwen3_vl": {  # Qwen/Qwen3-VL-8B-Instruct (the family's 7-8B size)
        "text": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=262144,
                     rms_norm_eps=1e-6, hidden_act="silu",
                     rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                      "mrope_interleaved": True}),
        "vision": dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                       hidden_act="gelu_pytorch_tanh", in_channels=3, patch_size=16, spatial_merge_size=2,
                       temporal_patch_size=2, num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24]),
        "tie_word_embeddings": False,
    },
    "qwen3_5": {  # transformers' "Qwen3.5-9B style" text config: 32 layers, full attention every 4th (hybrid)
        "text": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=32, num_attention_heads=16,
                     num_key_value_heads=4, head_dim=256, vocab_size=248320, max_position_embeddings=262144,
                     rms_norm_eps=1e-6, hidden_act="silu", full_attention_interval=4, linear_conv_kernel_dim=4,
                     linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
                     linear_value_head_dim=128,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                                      "mrope_section": [11, 11, 10], "mrope_interleaved": True}),
        "vision": dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                       hidden_act="gelu_pytorch_tanh", in_channels=3, patch_size=16, spatial_merge_size=2,
                       temporal_patch_size=2, num_position_embeddings=2304),
        "tie_word_embeddings": False,
    },
    "llava_onevision": {
        "text": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                     num_attention_heads=28, num_key_value_heads=4, vocab_size=152128, max_position_embeddings=32768,
                     rms_norm_eps=1e-6, hidden_act="silu", rope_parameters={"rope_type": "default",
                                                                            "rope_theta": 1000000.0}),
        "vision": dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                       num_hidden_layers=26, num_attention_heads=16, image_size=384, patch_size=14,
                       vision_use_head=False),
        "tie_word_embeddings": False,
    },
}


SUITE_FAMILIES = tuple(f for f in FAMILIES if f in CONFIGS_7B)


# ---- model -------------------------------------------------------------------------------
def _small_config(family: str, shape: str, vocab: int) -> dict:
    """``bench`` / ``tiny``: devmodels' LLM and vision widths, the real patch size / merge / input size."""
    lm = LM_SHAPES[shape]
    heads = 2 if shape == "tiny" else 4
    text = dict(hidden_size=lm.hidden, intermediate_size=lm.intermediate, num_hidden_layers=lm.layers,
                num_attention_heads=lm.heads, num_key_value_heads=lm.kv_heads, vocab_size=vocab,
                max_position_embeddings=32768, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    depth, width = VISION_DEPTH[shape], VISION_WIDTH[shape]
    if family.startswith("qwen"):
        half = lm.hidden // lm.heads // 2  # M-RoPE sections (t, h, w) add up to head_dim / 2
        text["rope_parameters"]["mrope_section"] = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    if family == "qwen2_vl":
        vision = dict(depth=depth, embed_dim=width, hidden_size=lm.hidden, mlp_ratio=2,
                      num_heads=heads, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    elif family == "qwen2_5_vl":
        vision = dict(depth=depth, hidden_size=width, intermediate_size=2 * width, num_heads=heads,
                      out_hidden_size=lm.hidden, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                      window_size=112, fullatt_block_indexes=[depth - 1], tokens_per_second=2)
    elif family == "qwen3_vl":
        depth += 2  # three DeepStack blocks before the last one, as devmodels builds it
        text["head_dim"] = lm.hidden // lm.heads
        text["rope_parameters"].update(rope_theta=5000000.0, mrope_interleaved=True)
        vision = dict(depth=depth, hidden_size=width, intermediate_size=2 * width, num_heads=heads,
                      out_hidden_size=lm.hidden, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                      num_position_embeddings=64 if shape == "tiny" else 256,
                      deepstack_visual_indexes=list(range(depth - 4, depth - 1)))
    elif family == "qwen3_5":  # the dev model's shapes (12 layers, hybrid), as devmodels builds it
        from vitcop_cli.models.builders.qwen3_5 import config_parts

        qshape, extra, vision = config_parts(shape)
        text.update(num_hidden_layers=qshape.layers, **extra)
    else:
        text["model_type"] = "qwen2"
        vision = dict(model_type="siglip_vision_model", hidden_size=VISION_WIDTH[shape],
                      intermediate_size=2 * VISION_WIDTH[shape], num_hidden_layers=VISION_DEPTH[shape],
                      num_attention_heads=heads, image_size=384, patch_size=14)
    return {"text": text, "vision": vision, "tie_word_embeddings": family.startswith("qwen")}


def build_config(family: str, shape: str, ids: dict[str, int], tokenizer_size: int):
    """The transformers config of the random model; special token ids follow the dev tokenizer."""
    import transformers

    spec = CONFIGS_7B[family] if shape == "7b" else _small_config(family, shape, (tokenizer_size + 63) // 64 * 64)
    text = {**spec["text"], "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"]}
    if family.startswith("qwen"):
        config_class = {"qwen2_vl": transformers.Qwen2VLConfig, "qwen2_5_vl": transformers.Qwen2_5_VLConfig,
                        "qwen3_vl": transformers.Qwen3VLConfig, "qwen3_5": transformers.Qwen3_5Config}[family]
        return config_class(
            text_config=text, vision_config=dict(spec["vision"]), tie_word_embeddings=spec["tie_word_embeddings"],
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        )
    return transformers.LlavaOnevisionConfig(
        text_config=text, vision_config=dict(spec["vision"]), tie_word_embeddings=spec["tie_word_embeddings"],
        image_token_index=ids["<image>"], video_token_index=ids["<video>"],
        vision_feature_select_strategy="full", vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9",
    )


def build_session(family: str, shape: str, device: torch.device, dtype: torch.dtype, attn: str,
                  decode_tokens: int, seed: int = 0) -> api.Session:
    """A library Session around a random-weight model created directly on ``device`` (no files)."""
    from transformers import AutoModelForImageTextToText

    processor, ids = make_processor(family)
    config = build_config(family, shape, ids, len(processor.tokenizer))
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation=attn)
    model.eval()
    # a random model stops whenever it samples EOS: force exactly ``decode_tokens`` new tokens
    model.generation_config.min_new_tokens = decode_tokens
    return api.Session(name=f"random {family} ({shape})", model=model, processor=processor,
                       adapter=adapter_for(model), device=device, attn_implementation=attn)


# ---- measurement -------------------------------------------------------------------------
class PrefillMemory:
    """CUDA: allocated bytes before a run and the peak allocated / reserved at the end of its first forward
    (the prefill; ``Session.generate`` resets the peak statistics right before it). Nothing on CPU."""

    def __init__(self, model, device: torch.device):
        self.model, self.device, self.cuda = model, device, device.type == "cuda"
        self.before = self.peak_allocated = self.peak_reserved = None
        self._hook = None

    def __enter__(self):
        if self.cuda:
            self.before = torch.cuda.memory_allocated(self.device)

            def on_forward(*_):
                if self.peak_allocated is None:
                    self.peak_allocated = torch.cuda.max_memory_allocated(self.device)
                    self.peak_reserved = torch.cuda.max_memory_reserved(self.device)

            self._hook = self.model.register_forward_hook(on_forward)
        return self

    def __exit__(self, *exc):
        if self._hook is not None:
            self._hook.remove()
        return False

    @property
    def extra(self) -> int | None:
        return None if self.peak_allocated is None else self.peak_allocated - self.before


@dataclass
class Row:
    """One (attention, method, preset): measured runs and what they reduce to."""

    attn: str
    method: str  # "none" for the unpruned baseline
    preset: str
    runs: list[dict] = field(default_factory=list)
    error: str | None = None
    reference_s: list[float] = field(default_factory=list)  # survivors-only prefills (vitcop rows and none)

    def median(self, key: str) -> float | None:
        values = [r[key] for r in self.runs if r.get(key) is not None]
        return statistics.median(values) if values else None


def one_run(session: api.Session, prepared, method: str, preset: str, decode_tokens: int) -> dict:
    with PrefillMemory(session.model, session.device) as mem:
        result = session.generate(prepared, preset=preset, method="vitcop" if method == BASELINE else method,
                                  max_new_tokens=decode_tokens)
    t, p = result.timings, result.pruning
    return {
        "vision_encoder_s": t.vision_encoder_s, "prefill_s": t.prefill_s, "ttft_s": t.model_ttft_s,
        "decode_tokens_per_s": t.decode_tokens_per_s, "pruning_s": t.pruning_s,
        "generated_tokens": result.tokens.generated,
        "peak_allocated_bytes": result.memory.peak_allocated_bytes,
        "peak_reserved_bytes": result.memory.peak_reserved_bytes,
        "prefill_peak_allocated_bytes": mem.peak_allocated, "prefill_peak_reserved_bytes": mem.peak_reserved,
        "prefill_extra_bytes": mem.extra,
        "n_visual": p.n_visual, "layer_averaged_visual": p.layer_averaged_visual,
        "layer_averaged_ratio": p.layer_averaged_ratio, "flops_ratio": p.flops_ratio,
        "prefill_flops": p.prefill_flops, "kv_cache_lengths": list(p.kv_cache_lengths),
        "phases": dict(vars(t.phases)),  # the time to the first token, phase by phase (ask's timings.phases)
    }


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def measure(session, prepared, attns, methods, presets, repeat, warmup, decode_tokens, log=print,
            reference: bool = True) -> dict:
    """Run the interleaved schedule under every attention implementation; {(attn, method, preset): Row}.

    With ``reference`` (and vitcop among the methods), every round under each attention also times the
    survivors-only prefill of none and of each vitcop preset into those rows' ``reference_s``; a failure
    there is logged and ends the reference for that attention, never the suite."""
    schedule = run_order(methods, presets, repeat, warmup)
    rows = {(a, s.method, s.preset): Row(a, s.method, s.preset) for a in attns for s in schedule}
    rounds = sorted({s.round for s in schedule})
    references = {}  # attn -> SurvivorReference, or None once it failed
    for r in rounds:
        for attn in attns:
            session.model.set_attn_implementation(attn)
            session.attn_implementation = attn
            for slot in (s for s in schedule if s.round == r):
                row = rows[(attn, slot.method, slot.preset)]
                if row.error is not None:
                    continue
                try:
                    run = one_run(session, prepared, slot.method, slot.preset, decode_tokens)
                except Exception as exc:  # noqa: BLE001 - a failing method is recorded and reported, never fatal
                    row.error = _one_line(exc)
                    log(f"  FAILED {attn} {slot.method} {slot.preset}: {row.error}")
                    if session.device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                if not slot.warmup:
                    row.runs.append(run)
            if reference and TARGET_METHOD in methods and attn != "eager":
                time_references(session, prepared, attn, presets, rows, references, measured=r >= warmup, log=log)
        log(f"round {r + 1}/{len(rounds)}{' (warm-up)' if r < warmup else ''} done", flush=True)
    return rows


def time_references(session, prepared, attn, presets, rows, references, measured: bool, log=print) -> None:
    """One survivors-only prefill per vitcop preset and none under ``attn`` (built on first use)."""
    if attn in references and references[attn] is None:  # failed before: no split under this attention
        return
    try:
        if attn not in references:
            references[attn] = SurvivorReference(session, prepared.inputs, presets)
        for preset in references[attn].presets():
            seconds = references[attn].seconds(preset)
            if measured:
                key = (attn, BASELINE, BASELINE) if preset == UNPRUNED else (attn, TARGET_METHOD, preset)
                rows[key].reference_s.append(seconds)
    except Exception as exc:  # noqa: BLE001 - the split is extra information; the suite goes on without it
        references[attn] = None
        log(f"  survivors-only reference under {attn} failed, slack not split: {_one_line(exc)}")
        if session.device.type == "cuda":
            torch.cuda.empty_cache()


def summarise(rows: dict) -> list[dict]:
    """One dict per row: medians, the pruning report and every ratio against none (same attention)."""
    out = []
    for (attn, method, preset), row in rows.items():
        base = rows[(attn, BASELINE, BASELINE)]
        d = {"attn": attn, "method": method, "preset": preset, "runs": len(row.runs), "error": row.error}
        keys = ("vision_encoder_s", "prefill_s", "ttft_s", "decode_tokens_per_s", "pruning_s",
                "peak_allocated_bytes", "peak_reserved_bytes", "prefill_peak_allocated_bytes",
                "prefill_peak_reserved_bytes", "prefill_extra_bytes")
        for k in keys:
            d[k] = row.median(k)
        last = row.runs[-1] if row.runs else {}
        for k in ("n_visual", "layer_averaged_visual", "layer_averaged_ratio", "flops_ratio", "prefill_flops",
                  "kv_cache_lengths", "generated_tokens"):
            d[k] = last.get(k)

        def ratio(num, den):
            return None if num is None or not den else num / den

        ok = row.error is None and base.error is None and row.runs and base.runs
        d["prefill_speedup"] = ratio(base.median("prefill_s"), d["prefill_s"]) if ok else None
        d["ttft_speedup"] = ratio(base.median("ttft_s"), d["ttft_s"]) if ok else None
        d["decode_ratio"] = ratio(d["decode_tokens_per_s"], base.median("decode_tokens_per_s")) if ok else None
        d["prefill_memory_ratio"] = ratio(d["prefill_extra_bytes"], base.median("prefill_extra_bytes")) if ok else None
        d["peak_allocated_ratio"] = ratio(d["peak_allocated_bytes"], base.median("peak_allocated_bytes")) if ok else None
        d["flops_speedup"] = ratio(1.0, d["flops_ratio"])
        measured = ratio(d["prefill_s"], base.median("prefill_s")) if ok else None
        d["measured_prefill_ratio"] = measured
        d["slack"] = ratio(measured, d["flops_ratio"])
        d["reference_s"] = statistics.median(row.reference_s) if row.reference_s else None
        d.update(reference_ratio=None, kernel_slack=None, vitcop_slack=None)
        if d["slack"] is not None and d["reference_s"] and base.reference_s and method != BASELINE:
            d.update(split_slack(measured, d["reference_s"] / statistics.median(base.reference_s), d["flops_ratio"]))
        out.append(d)
    return out


def check_targets(summary: list[dict], attns: list[str]) -> list[dict]:
    """The issue's targets for vitcop at 1_9 under each attention: PASS, FAIL or N/A (not measurable)."""
    lines = []
    for attn in attns:
        row = next((r for r in summary if (r["attn"], r["method"], r["preset"]) == (attn, TARGET_METHOD,
                                                                                    TARGET_PRESET)), None)
        for key, (op, bound) in TARGETS.items():
            value = None if row is None else row.get(key)
            status = "N/A" if value is None else (
                "PASS" if (value >= bound if op == ">=" else value <= bound) else "FAIL")
            lines.append({"attn": attn, "target": key, "op": op, "bound": bound, "value": value, "status": status})
    return lines


# ---- output ------------------------------------------------------------------------------
def _f(x, fmt: str, scale: float = 1.0) -> str:
    return "-" if x is None else format(x if scale == 1.0 else x * scale, fmt)


def render(summary: list[dict], cuda: bool) -> None:
    headers = ["attn", "preset", "method", "N", "vis/layer", "FLOPs x", "vision ms", "prefill ms", "prefill x",
               "TTFT ms", "TTFT x", "dec tok/s", "dec x", "slack", "kernels", "vitcop"]
    if cuda:
        headers += ["peak GiB", "prefill GiB", "prefill mem x"]
    table = []
    for r in summary:
        if r["error"]:
            table.append([r["attn"], r["preset"], r["method"], "FAILED: " + r["error"][:60]] + [""] * (len(headers) - 4))
            continue
        cells = [r["attn"], r["preset"], r["method"], _f(r["n_visual"], "d"), _f(r["layer_averaged_ratio"], ".3f"),
                 _f(r["flops_speedup"], ".2f"), _f(r["vision_encoder_s"], ".1f", 1e3), _f(r["prefill_s"], ".1f", 1e3),
                 _f(r["prefill_speedup"], ".2f"), _f(r["ttft_s"], ".1f", 1e3), _f(r["ttft_speedup"], ".2f"),
                 _f(r["decode_tokens_per_s"], ".1f"), _f(r["decode_ratio"], ".2f"), _f(r["slack"], ".2f"),
                 _f(r.get("kernel_slack"), ".2f"), _f(r.get("vitcop_slack"), ".2f")]
        if cuda:
            cells += [_f(r["peak_allocated_bytes"], ".2f", 2**-30), _f(r["prefill_extra_bytes"], ".2f", 2**-30),
                      _f(r["prefill_memory_ratio"], ".2f")]
        table.append(cells)
    print_table(headers, table)
    print("vis/layer: layer-averaged visual tokens / N.  FLOPs x: FLOPs-predicted prefill speed-up.  "
          "prefill: first forward - vision encoder.\nx columns: ratios to none under the same attention "
          "(speed-ups: none / row; dec x: row / none).  slack: measured prefill ratio / FLOPs-predicted ratio"
          " = kernels x vitcop\n(kernels: survivors-only prefill ratio / FLOPs ratio; vitcop: measured / "
          "survivors-only ratio)."
          + ("\npeak: max allocated over the generate; prefill GiB: prefill peak above what was allocated "
             "before the run (weights and inputs excluded)." if cuda else "\nmemory: not measured on CPU."))


def write_csv(summary: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        columns = [k for k in summary[0] if k != "kv_cache_lengths"]
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in summary:
            writer.writerow({k: "" if r[k] is None else r[k] for k in columns})


# ---- main --------------------------------------------------------------------------------
def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=SUITE_FAMILIES, default="qwen2_vl")
    ap.add_argument("--shape", choices=SHAPES, default="bench",
                    help="7b: the released 7B architecture (GPU); bench / tiny: devmodels' small shapes (CPU)")
    ap.add_argument("--frames", type=int, default=16, help="frames of the synthetic clip (Qwen families: even)")
    ap.add_argument("--clip-size", default="640x360", help="WIDTHxHEIGHT of the synthetic clip (default 640x360)")
    ap.add_argument("--presets", default=",".join(PRESETS), help="comma-separated; none is always measured")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated pruning methods")
    ap.add_argument("--attn", default="auto",
                    help="comma-separated attention implementations; auto = sdpa, plus flash_attention_2 "
                         "when installed on CUDA")
    ap.add_argument("--repeat", type=int, default=3, help="measured rounds (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up rounds, not measured (default 1)")
    ap.add_argument("--decode-tokens", type=int, default=64, help="new tokens per run (default 64)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--dtype", choices=("auto", "bfloat16", "float16", "float32"), default="auto",
                    help="auto: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write every number to this JSON file")
    ap.add_argument("--csv", type=Path, default=None, help="write one line per row to this CSV file")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the survivors-only prefills that split the slack into kernels x vitcop")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails, too")
    args = ap.parse_args(argv)
    try:
        w, h = (int(v) for v in args.clip_size.lower().split("x"))
    except ValueError:
        ap.error(f"--clip-size must be WIDTHxHEIGHT, got {args.clip_size!r}")
    if min(w, h) < 28:
        ap.error("--clip-size: each side must be at least 28 pixels")
    args.width, args.height = w, h
    if args.repeat < 1 or args.warmup < 0 or args.decode_tokens < 2:
        ap.error("--repeat must be >= 1, --warmup >= 0, --decode-tokens >= 2")
    if args.frames < 2 or (args.family.startswith("qwen") and args.frames % 2):
        ap.error(f"--frames must be >= 2 (and even for {args.family}: one temporal patch is 2 frames)")
    args.presets = [p for p in _names(args.presets) if p != BASELINE]
    args.methods = _names(args.methods)
    if not args.methods:
        ap.error("--methods is empty")
    for m in args.methods:
        try:
            api.check_method(m)
        except Exception as exc:  # noqa: BLE001 - InputError: one line
            ap.error(str(exc))
    for p in args.presets:
        try:
            api.check_preset(p)
        except Exception as exc:  # noqa: BLE001
            ap.error(str(exc))
    return args


def resolve(args):
    """(device, dtype, attention implementations) or SystemExit(2) with one line."""
    try:
        device = resolve_device(args.device)
    except Exception as exc:  # noqa: BLE001 - InputError
        raise SystemExit(f"gpu_suite: {exc}") from None
    if args.shape == "7b" and device.type != "cuda":
        raise SystemExit("gpu_suite: --shape 7b needs a CUDA device (about 16 GB of bf16 weights); "
                         "use --shape bench on a CPU")
    if args.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, args.dtype)
    flash = device.type == "cuda" and flash_attn_installed()
    if args.attn == "auto":
        attns = ["sdpa"] + (["flash_attention_2"] if flash else [])
    else:
        attns = _names(args.attn)
        for a in attns:
            if a not in ("sdpa", "eager", "flash_attention_2"):
                raise SystemExit(f"gpu_suite: unknown attention implementation {a!r}")
            if a == "flash_attention_2" and not flash:
                raise SystemExit("gpu_suite: flash_attention_2 needs CUDA and the flash-attn package")
    return device, dtype, attns


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device, dtype, attns = resolve(args)
    api.quiet_library_logs()
    machine = machine_info(torch.get_num_threads())
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    print(f"machine: {machine.get('gpu') or machine['cpu']}; torch {machine['torch']}, transformers "
          f"{machine['transformers']}; attention: {', '.join(attns)}"
          + ("" if device.type == "cuda" and flash_attn_installed() else "  (flash_attention_2: not available here)"))
    started = time.perf_counter()
    session = build_session(args.family, args.shape, device, dtype, attns[0], args.decode_tokens, args.seed)
    shape = session.adapter.lm_shape()
    print(f"model: random {args.family} ({args.shape}) built in {time.perf_counter() - started:.1f}s on {device}, "
          f"{str(dtype).replace('torch.', '')}: LLM hidden {shape.hidden}, {shape.layers} layers, {shape.heads} heads "
          f"/ {shape.kv_heads} KV heads, MLP {shape.intermediate}, vocab {shape.vocab}")
    clip = synthetic_clip(args.frames, args.width, args.height, args.seed)
    prepared = session.prepare(clip, QUESTION)
    inputs = prepared.inputs
    grid = inputs.get("video_grid_thw")
    n_video = int((inputs["input_ids"][0] == session.adapter.visual_token_ids()["video"]).sum())
    print(f"clip: synthetic, {args.frames} frames of {args.width}x{args.height}"
          + (f" -> grid_thw {grid[0].tolist()}" if grid is not None else
             f" -> {tuple(inputs['pixel_values_videos'].shape[-2:])} per frame")
          + f"; prompt {inputs['input_ids'].shape[1]} tokens, {n_video} video tokens")
    n_runs = (args.repeat + args.warmup) * len(attns) * (1 + len(args.presets) * len(args.methods))
    print(f"runs: {n_runs} ({args.warmup} warm-up + {args.repeat} measured rounds x {len(attns)} attention x "
          f"{1 + len(args.presets) * len(args.methods)} rows), {args.decode_tokens} new tokens each", flush=True)

    rows = measure(session, prepared, attns, args.methods, args.presets, args.repeat, args.warmup,
                   args.decode_tokens, reference=not args.no_reference)
    summary = summarise(rows)
    cuda = device.type == "cuda"
    print()
    render(summary, cuda)
    targets = check_targets(summary, attns)
    print(f"\ntargets ({TARGET_METHOD} at {TARGET_PRESET} vs none):")
    for t in targets:
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        why = " (memory is not measured on CPU)" if t["status"] == "N/A" and t["target"] == "prefill_memory_ratio" \
            and not cuda else ""
        print(f"  {t['status']:<4} {t['attn']:<18} {t['target']} {t['op']} {t['bound']}: {value}{why}")
    failed = [r for r in summary if r["error"]]
    if failed:
        print(f"\n{len(failed)} row(s) failed: " + "; ".join(f"{r['attn']} {r['method']} {r['preset']}: {r['error']}"
                                                           for r in failed))
    payload = {
        "machine": machine, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "family": args.family, "shape": args.shape, "lm_shape": dataclasses.asdict(shape),
        "clip": {"frames": args.frames, "width": args.width, "height": args.height,
                 "grid_thw": grid[0].tolist() if grid is not None else None},
        "prompt_tokens": int(inputs["input_ids"].shape[1]), "video_tokens": n_video,
        "attn": attns, "presets": args.presets, "methods": args.methods, "repeat": args.repeat,
        "warmup": args.warmup, "decode_tokens": args.decode_tokens, "rows": summary, "targets": targets,
        "failed": bool(failed), "wall_s": time.perf_counter() - started,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    if args.csv:
        write_csv(summary, args.csv)
        print(f"wrote {args.csv}")
    if failed:
        return 1
    return 1 if args.strict and any(t["status"] == "FAIL" for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
