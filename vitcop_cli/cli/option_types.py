"""Typer options shared by ``ask``, ``batch`` and ``profile`` — declared once, so every command
spells, defaults and documents them the same way. Use as ``fps: Fps = None``.

Spellings: ``--preset/-p`` and ``--method`` everywhere; commands that run several take comma
lists under the same names, with ``--presets`` / ``--methods`` as aliases (:data:`Presets`,
:data:`Methods`). Defaults people set once come from the environment: ``VITCOP_MODEL``,
``VITCOP_PRESET`` (``ask`` and ``batch``; ``profile`` sweeps its own list), ``VITCOP_DEVICE``; a
flag on the command line wins. Flags carry ``metavar=""`` so help shows no ``<bool>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..defaults import DEFAULT_MODEL

Model = Annotated[
    str,
    typer.Option(
        "--model", "-m", envvar="VITCOP_MODEL",
        help="Hugging Face id, local folder, or a built-in random-weight demo model such as tiny:qwen2_vl "
        "(see `vitcop models`).",
    ),
]
Preset = Annotated[
    str,
    typer.Option(
        "--preset", "-p", envvar="VITCOP_PRESET",
        help="Pruning preset: none, 1_3, 2_9, 1_9, or a YAML file (see `vitcop presets`).",
    ),
]
Presets = Annotated[
    str,
    typer.Option(
        "--preset", "--presets", "-p", envvar="VITCOP_PRESET",
        help="Comma-separated pruning presets (names or YAML files), e.g. none,1_3,1_9.",
    ),
]
ProfilePresets = Annotated[
    str,
    typer.Option(
        "--preset", "--presets", "-p",
        help="Comma-separated presets (names or YAML files); `none` is always measured.",
    ),
]
Method = Annotated[
    str,
    typer.Option(
        "--method", help="Pruning method: vitcop, or a baseline at the same ratio (see `vitcop methods`)."
    ),
]
Methods = Annotated[
    str,
    typer.Option(
        "--method", "--methods", help="Comma-separated pruning methods (see `vitcop methods`), e.g. vitcop,fastv."
    ),
]
Seed = Annotated[
    Optional[int],
    typer.Option(
        "--seed", help="Seed torch before generating: sampling repeats run to run (recorded in --json)."
    ),
]
Fps = Annotated[Optional[float], typer.Option("--fps", help="Frames sampled per second of clip \\[default: 2.0].")]
Frames = Annotated[Optional[int], typer.Option("--frames", help="Sample exactly N frames (instead of --fps).")]
MaxFrames = Annotated[int, typer.Option("--max-frames", help="Upper bound on sampled frames.")]
MaxPixels = Annotated[Optional[int], typer.Option("--max-pixels", help="Per-frame pixel cap (Qwen2-VL).")]
MinPixels = Annotated[Optional[int], typer.Option("--min-pixels", help="Per-frame pixel floor (Qwen2-VL).")]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", help="Longest answer, in tokens.")]
Temperature = Annotated[float, typer.Option("--temperature", help="0 = greedy (deterministic); else at least 1e-6.")]
TopP = Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling (with --temperature > 0).")]
System = Annotated[Optional[str], typer.Option("--system", help="System prompt.")]
Device = Annotated[
    str, typer.Option("--device", envvar="VITCOP_DEVICE", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N, mps.")
]
Dtype = Annotated[
    str, typer.Option("--dtype", help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16.")
]
Attn = Annotated[
    str,
    typer.Option(
        "--attn", help="auto (flash_attention_2 if installed on CUDA, else sdpa), sdpa, eager, flash_attention_2."
    ),
]
Resize = Annotated[
    str,
    typer.Option(
        "--resize",
        help="fast: the decoder scales each sampled frame straight to the size the model's processor uses; "
        "exact: frames decoded at source size in bounded chunks and resized by the processor's own resize "
        "(pixel values bit-identical to the reference preprocessing). Both hold a bounded chunk of source-size "
        "frames, never the clip.",
    ),
]
Decoder = Annotated[
    str,
    typer.Option(
        "--decoder",
        help="Video decoder: decord; torchcodec (pip install 'vitcop\\[torchcodec]' and FFmpeg's libraries); pyav.",
    ),
]
DecodeDevice = Annotated[
    str, typer.Option("--decode-device", help="Where clips are decoded: cpu, or cuda (NVDEC; --decoder torchcodec).")
]
Offline = Annotated[
    bool,
    typer.Option("--offline", metavar="", help="Never download: local files / cache only (also HF_HUB_OFFLINE=1)."),
]
PrefixCache = Annotated[
    Optional[Path],
    typer.Option(
        "--prefix-cache", metavar="DIR", envvar="VITCOP_PREFIX_CACHE",
        help="Keep pruned prefixes on disk in DIR (safetensors files), so a later run about the same clip, options "
        "and model skips decoding and prefilling it (also VITCOP_PREFIX_CACHE).",
    ),
]
PrefixCacheGb = Annotated[
    float, typer.Option("--prefix-cache-gb", help="Size cap of --prefix-cache DIR in GiB (least recently used go first).")
]
Debug = Annotated[bool, typer.Option("--debug", metavar="", help="Show full tracebacks.")]
Json = Annotated[bool, typer.Option("--json", metavar="", help="Print one JSON object on stdout.")]

__all__ = [
    "DEFAULT_MODEL", "Attn", "Debug", "DecodeDevice", "Decoder", "Device", "Dtype", "Fps", "Frames", "Json", "MaxFrames", "MaxNewTokens",
    "MaxPixels", "Method", "Methods", "MinPixels", "Model", "Offline", "Preset", "Presets", "ProfilePresets", "Resize", "Seed",
    "System", "Temperature", "TopP",
]
