"""GPU-only checks; they skip cleanly (with the reason) on machines without CUDA / flash-attn."""

from __future__ import annotations

import pytest
import torch

import pruning
from vitcop_cli import api
from vitcop_cli.models.devmodels import FAMILIES
from vitcop_cli.session.runtime import flash_attn_installed
from vitcop_cli.media.video import load_visual

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_flash = pytest.mark.skipif(
    not (torch.cuda.is_available() and flash_attn_installed()), reason="needs a CUDA GPU and flash-attn"
)


@needs_flash
@pytest.mark.parametrize("family", FAMILIES)
def test_flash_attention_prunes_like_sdpa(tiny_models, clip, family):
    """Under FlashAttention-2 the pruned cache lengths equal SDPA's and the logits agree (bf16)."""
    results = {}
    for attn in ("sdpa", "flash_attention_2"):
        session = api.load(str(tiny_models[family]), device="cuda", dtype="bfloat16", attn=attn, offline=True)
        inputs = session.prepare(load_visual(clip, frames=4), "What happens?").inputs
        with pruning.attach(session.model, "1_9") as handle, torch.inference_mode():
            out = session.model(**inputs, use_cache=True)
            results[attn] = (handle.report(inputs["input_ids"]).kv_cache_lengths, out.logits[0, -1].float())
    assert results["sdpa"][0] == results["flash_attention_2"][0]
    torch.testing.assert_close(results["sdpa"][1], results["flash_attention_2"][1], atol=5e-2, rtol=5e-2)


@needs_cuda
def test_cuda_report_has_device_memory(tiny_models, clip):
    session = api.load(str(tiny_models["qwen2_vl"]), device="cuda", offline=True)
    result = session.ask(clip, "What happens?", preset="1_3", frames=4, max_new_tokens=2)
    assert result.memory.peak_allocated_bytes > 0 and result.memory.peak_reserved_bytes >= result.memory.peak_allocated_bytes
