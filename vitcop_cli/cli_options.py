"""Typer options shared by ``ask``, ``batch`` and ``profile`` — declared once, so every command
spells, defaults and documents them the same way. Use as ``fps: Fps = None``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .defaults import DEFAULT_MODEL

Model = Annotated[str, typer.Option("--model", "-m", help="Hugging Face id or local folder.")]
Fps = Annotated[Optional[float], typer.Option("--fps", help="Frames sampled per second of clip \\[default: 2.0].")]
Frames = Annotated[Optional[int], typer.Option("--frames", help="Sample exactly N frames (instead of --fps).")]
MaxFrames = Annotated[int, typer.Option("--max-frames", help="Upper bound on sampled frames.")]
MaxPixels = Annotated[Optional[int], typer.Option("--max-pixels", help="Per-frame pixel cap (Qwen2-VL).")]
MinPixels = Annotated[Optional[int], typer.Option("--min-pixels", help="Per-frame pixel floor (Qwen2-VL).")]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", help="Longest answer, in tokens.")]
Temperature = Annotated[float, typer.Option("--temperature", help="0 = greedy (deterministic).")]
TopP = Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling (with --temperature > 0).")]
System = Annotated[Optional[str], typer.Option("--system", help="System prompt.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Dtype = Annotated[
    str, typer.Option("--dtype", help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16.")
]
Attn = Annotated[
    str,
    typer.Option(
        "--attn", help="auto (flash_attention_2 if installed on CUDA, else sdpa), sdpa, eager, flash_attention_2."
    ),
]
Offline = Annotated[bool, typer.Option("--offline", help="Never download: local files / cache only.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")]

__all__ = [
    "DEFAULT_MODEL", "Attn", "Debug", "Device", "Dtype", "Fps", "Frames", "MaxFrames", "MaxNewTokens", "MaxPixels",
    "MinPixels", "Model", "Offline", "System", "Temperature", "TopP",
]
