"""Device, dtype and attention-implementation choice; honest clocks and peak memory.

- ``resolve_device("auto")`` -> "cuda" when available, else "cpu"; asking for CUDA without it is an
  :class:`InputError`. ``"mps"`` (Apple GPUs) is taken only when asked for and torch has MPS,
  else an :class:`InputError` saying so.
- ``resolve_dtype("auto", device)`` -> bfloat16 on a GPU that supports it, float16 on an older GPU
  and on MPS, float32 on CPU.
- ``resolve_attn("auto", device)`` -> "flash_attention_2" when flash-attn is installed and the
  device is CUDA, else "sdpa".
- ``Clock(device)`` synchronizes CUDA before every reading, so GPU work is charged where it happens.
- ``MemoryMeter(device)``: on CUDA, max allocated / reserved since ``reset``; on CPU, the process'
  peak RSS (a lifetime high-water mark, which cannot be reset).
"""

from __future__ import annotations

import importlib.util
import resource
import sys
import time

import torch

from ..errors import InputError
from ..result import MemoryReport

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTN_CHOICES = ("auto", "sdpa", "eager", "flash_attention_2")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type == "mps":
        if not mps_available():
            raise InputError(
                f"--device {device}: MPS is not available here (it needs an Apple-silicon Mac and a torch build "
                "with MPS); use --device cpu (or auto)"
            )
    elif dev.type != "cpu":
        raise InputError(f"unsupported device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return dev


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "mps":
            return torch.float16
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def resolve_attn(attn: str, device: torch.device) -> str:
    if attn not in ATTN_CHOICES:
        raise InputError(f"unknown attention implementation {attn!r}; use {', '.join(ATTN_CHOICES)}")
    if attn == "auto":
        return "flash_attention_2" if device.type == "cuda" and flash_attn_installed() else "sdpa"
    if attn == "flash_attention_2":
        if device.type != "cuda":
            raise InputError("--attn flash_attention_2 needs a CUDA device; use sdpa on CPU")
        if not flash_attn_installed():
            raise InputError("--attn flash_attention_2: flash-attn is not installed (pip install 'vitcop[flash]')")
    return attn


class Clock:
    """perf_counter that first waits for queued CUDA work on ``device``."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.mps = device.type == "mps"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        elif self.mps:
            torch.mps.synchronize()
        return time.perf_counter()


class MemoryMeter:
    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> MemoryReport:
        if self.device.type == "cuda":
            return MemoryReport(
                device=str(self.device),
                peak_allocated_bytes=torch.cuda.max_memory_allocated(self.device),
                peak_reserved_bytes=torch.cuda.max_memory_reserved(self.device),
            )
        return MemoryReport(device=self.device.type, peak_rss_bytes=peak_rss_bytes())


def peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024
