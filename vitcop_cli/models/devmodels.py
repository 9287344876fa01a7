"""Random-weight checkpoints for tests, demos and benchmarks — built offline.

Contract: ``make_model(family, out_dir, size)`` writes a folder that loads through exactly the
same code path as a real Hugging Face checkpoint (``AutoConfig`` / ``AutoModelForImageTextToText``
/ ``AutoProcessor``): a real config of the family, random weights (safetensors), a small byte-level
BPE tokenizer trained here that carries the family's special tokens and a chat template, and the
family's real processor (image + video processor configs). Nothing is downloaded.

The answers of such a model are meaningless text; what it is good for is exercising every code path
(preprocessing, vision encoder, M-RoPE, caches, pruning hooks) at a size that runs on a CPU.

Sizes:
    tiny   LM hidden 64, 8 layers, 4 heads / 2 KV heads; a 2-block vision encoder. Seconds on a CPU.
    bench  LM hidden 1024, 12 layers, 16 heads / 2 KV heads, MLP 2816; a 4-block vision encoder.
           Used by ``benchmarks/`` to measure prefill ratios on realistic-ish LLM shapes.
    (Qwen3-VL's vision encoder has 2 more blocks, so that 3 of them feed DeepStack as released;
    Qwen2.5-VL's last vision block attends over full frames, the others within windows.)

Families: ``FAMILIES`` (every family-parametrised test runs on each) plus ``qwen3_vl_moe`` and
``qwen3_5_moe``, which ``make_model`` builds too (8 experts, 2 active) and the tests cover with a smaller
set of oracles. This module is the registry: one builder per family in :mod:`vitcop_cli.models.builders`
(``<family>.build(size)``), all on the shared :mod:`~vitcop_cli.models.builders.base`. Qwen3.5 (hybrid
Gated DeltaNet / full attention) has 12 LLM layers at both sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

from .builders import llava_onevision, qwen2_5_vl, qwen2_vl, qwen3_5, qwen3_vl
from .builders.base import (  # noqa: F401  (the shapes and templates, re-exported for benchmarks and tests)
    LLAVA_CHAT_TEMPLATE,
    LLAVA_SPECIALS,
    LM_SHAPES,
    QWEN3_CHAT_TEMPLATE,
    QWEN_CHAT_TEMPLATE,
    QWEN_SPECIALS,
    SIZES,
    VISION_DEPTH,
    VISION_WIDTH,
    train_tokenizer,
)

FAMILIES = ("qwen2_vl", "llava_onevision", "qwen2_5_vl", "qwen3_vl", "qwen3_5")

_BUILDERS = {
    "qwen2_vl": qwen2_vl.build,
    "llava_onevision": llava_onevision.build,
    "qwen2_5_vl": qwen2_5_vl.build,
    "qwen3_vl": qwen3_vl.build,
    "qwen3_5": qwen3_5.build,
    # not in FAMILIES (the test suite covers them with their own few oracles, to keep CI short)
    "qwen3_vl_moe": lambda size: qwen3_vl.build(size, moe=True),
    "qwen3_5_moe": lambda size: qwen3_5.build(size, moe=True),
}


#: every family ``make_model`` builds (FAMILIES first), e.g. for listing demo models
BUILDABLE = tuple(_BUILDERS)


def lm_layout(family: str, size: str) -> tuple[int, list[str] | None]:
    """(decoder layers, layer types or None for a dense LLM) of the dev model ``make_model`` builds, without
    building it (Qwen3.5: :data:`vitcop_cli.models.builders.qwen3_5.LAYERS` layers, full attention every 4th)."""
    if family.startswith("qwen3_5"):
        layers = qwen3_5.LAYERS
        return layers, ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(layers)]
    return LM_SHAPES[size].layers, None


def builder_sources() -> list[Path]:
    """The source files a dev model's bytes depend on (this registry and every builder), for cache keys."""
    return [Path(__file__), *sorted((Path(__file__).parent / "builders").glob("*.py"))]


def make_model(family: str, out_dir: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Build and save a random-weight checkpoint of ``family`` at ``size`` into ``out_dir``.

    Deterministic for a given seed (an integer from 0 to 2**63 - 1). Returns the folder. Raises
    ValueError for an unknown family/size or a seed out of range. Every file written gets the mode
    ``config.json`` got (0644 under the usual umask): safetensors would leave the weights 0600, so
    another user could read the config but not the weights.
    """
    import torch

    if family not in _BUILDERS:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(_BUILDERS)}")
    if size not in LM_SHAPES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"--seed must be an integer from 0 to {2**63 - 1} (2**63 - 1), got {str(seed)[:30]}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model, processor = _BUILDERS[family](size)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "vitcop_devmodel.json").write_text(
        json.dumps({"family": family, "size": size, "seed": seed, "note": "random weights: answers are meaningless"})
    )
    mode = (out / "config.json").stat().st_mode & 0o777
    for f in out.iterdir():
        if f.is_file() and f.stat().st_mode & 0o777 != mode:
            f.chmod(mode)
    return out


def make_processor(family: str):
    """The family's processor at the released checkpoints' resolution, around the dev tokenizer.

    For models built elsewhere from a config (``benchmarks/gpu_suite.py``): the image / video
    processors carry the released checkpoints' settings (Qwen2-VL / Qwen2.5-VL: 56*56 .. 28*28*16384
    pixels per image, transformers' default video bounds 128*28*28 .. 768*28*28 per frame; Qwen3-VL and
    Qwen3.5 (which ships Qwen3-VL's processor):
    the same in 32-pixel merged units, transformers' default video processor; LLaVA-OneVision:
    384 x 384 frames, 729 base image tokens, the released anyres pinpoints), the tokenizer and chat
    template are the dev ones (special tokens first). Returns (processor, {special token: id}).
    """
    if family in ("qwen2_vl", "qwen2_5_vl"):  # Qwen2.5-VL ships Qwen2-VL's image / video processors
        import transformers
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        cls = transformers.Qwen2VLProcessor if family == "qwen2_vl" else transformers.Qwen2_5_VLProcessor
        tokenizer = train_tokenizer(QWEN_SPECIALS)
        processor = cls(
            image_processor=Qwen2VLImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}),
            video_processor=Qwen2VLVideoProcessor(),
            tokenizer=tokenizer,
            chat_template=QWEN_CHAT_TEMPLATE,
        )
        specials = QWEN_SPECIALS
    elif family in ("qwen3_vl", "qwen3_5"):  # 16-pixel patches: 64*32*32 .. 16384*32*32 per image, video as released
        from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

        tokenizer = train_tokenizer(QWEN_SPECIALS)
        processor = Qwen3VLProcessor(
            image_processor=Qwen2VLImageProcessor(
                size={"shortest_edge": 64 * 32 * 32, "longest_edge": 16384 * 32 * 32}, patch_size=16, merge_size=2
            ),
            video_processor=Qwen3VLVideoProcessor(),
            tokenizer=tokenizer,
            chat_template=QWEN3_CHAT_TEMPLATE,
        )
        specials = QWEN_SPECIALS
    elif family == "llava_onevision":
        from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

        tokenizer = train_tokenizer(LLAVA_SPECIALS)
        processor = LlavaOnevisionProcessor(
            image_processor=LlavaOnevisionImageProcessor(),
            video_processor=LlavaOnevisionVideoProcessor(),
            tokenizer=tokenizer,
            chat_template=LLAVA_CHAT_TEMPLATE,
            num_image_tokens=(384 // 14) ** 2,
            vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9",
        )
        specials = LLAVA_SPECIALS
    else:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    return processor, {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
