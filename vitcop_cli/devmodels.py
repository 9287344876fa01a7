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
set of oracles. Qwen3.5 (hybrid Gated DeltaNet / full attention) is built by
:mod:`vitcop_cli.devmodels_qwen3_5` (12 LLM layers at both sizes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FAMILIES = ("qwen2_vl", "llava_onevision", "qwen2_5_vl", "qwen3_vl", "qwen3_5")
SIZES = ("tiny", "bench")


@dataclass(frozen=True)
class LMShape:
    """Shape of the language model of a dev checkpoint."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int


LM_SHAPES = {
    "tiny": LMShape(hidden=64, layers=8, heads=4, kv_heads=2, intermediate=128),
    "bench": LMShape(hidden=1024, layers=12, heads=16, kv_heads=2, intermediate=2816),
}
VISION_DEPTH = {"tiny": 2, "bench": 4}
VISION_WIDTH = {"tiny": 32, "bench": 128}

QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
LLAVA_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

# A Qwen3-VL style chat template (no default system turn; vision placeholders inside the user turn).
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A Qwen2-VL style chat template: Qwen3-VL's plus the default system turn.
QWEN_CHAT_TEMPLATE = QWEN3_CHAT_TEMPLATE.replace(
    "{% for message in messages %}",
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}",
    1,
)

# A LLaVA-OneVision style chat template (images, then videos, then text of each turn).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'video' %}<video>\n{% endif %}{% endfor %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = """
What happens in the video? A red circle moves from the left to the right while a blue square
falls from the top to the bottom. The yellow ball bounces and the green rectangle grows.
Describe the scene. Which object moves faster? How many shapes are there? What color is the
circle? Answer with the option's letter from the given choices directly. The camera is still.
You are a helpful assistant. The answer is A, B, C or D. Yes. No. There are two objects.
"""


def _train_tokenizer(specials: list[str], vocab_size: int = 600):
    """A byte-level BPE tokenizer trained on a small built-in corpus; specials get the first ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[3:],
    )


def _vocab_size(tokenizer) -> int:
    return (len(tokenizer) + 63) // 64 * 64


def _text_config(shape: LMShape, vocab: int, tokenizer, **extra) -> dict:
    return dict(
        vocab_size=vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=32768,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        **extra,
    )


def _build_qwen2_vl(size: str):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    shape = LM_SHAPES[size]
    tokenizer = _train_tokenizer(QWEN_SPECIALS)
    head_dim = shape.hidden // shape.heads
    half = head_dim // 2  # M-RoPE sections (t, h, w) must add up to head_dim / 2
    mrope = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = Qwen2VLConfig(
        text_config=_text_config(
            shape,
            _vocab_size(tokenizer),
            tokenizer,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope},
        ),
        vision_config=dict(
            depth=VISION_DEPTH[size],
            embed_dim=VISION_WIDTH[size],
            num_heads=2 if size == "tiny" else 4,
            hidden_size=shape.hidden,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    return Qwen2VLForConditionalGeneration(config), _qwen2_processor(Qwen2VLProcessor, tokenizer)


def _qwen2_processor(processor_cls, tokenizer):
    """A Qwen2-VL-style processor (Qwen2-VL image / video processors) with small pixel bounds."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    pixels = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 64}
    return processor_cls(
        image_processor=Qwen2VLImageProcessor(size=pixels),
        video_processor=Qwen2VLVideoProcessor(size=pixels),
        tokenizer=tokenizer,
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def _build_llava_onevision(size: str):
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    shape = LM_SHAPES[size]
    tokenizer = _train_tokenizer(LLAVA_SPECIALS)
    image_size, patch = 112, 14  # 8x8 patches per frame, pooled to 4x4 tokens for video
    pinpoints = [[112, 112], [112, 224], [224, 112], [224, 224]]
    config = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", **_text_config(shape, _vocab_size(tokenizer), tokenizer)),
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=VISION_WIDTH[size],
            intermediate_size=2 * VISION_WIDTH[size],
            num_hidden_layers=VISION_DEPTH[size],
            num_attention_heads=2 if size == "tiny" else 4,
            image_size=image_size,
            patch_size=patch,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    model = LlavaOnevisionForConditionalGeneration(config)
    square = {"height": image_size, "width": image_size}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=square, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=square),
        tokenizer=tokenizer,
        chat_template=LLAVA_CHAT_TEMPLATE,
        num_image_tokens=(image_size // patch) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
    return model, processor


def _mrope_sections(shape: LMShape) -> list[int]:
    """M-RoPE sections (t, h, w) adding up to head_dim / 2, in the released checkpoints' proportions."""
    half = shape.hidden // shape.heads // 2
    return [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]


def _qwen_vision_config(size: str, depth: int, shape: LMShape, *, patch_size: int, **family) -> dict:
    """The vision-config fields Qwen2.5-VL and Qwen3-VL share (width by ``size``, 2x2 merge, 2-frame temporal
    patches, output width = the LLM's), plus the family's own ``family`` fields."""
    return dict(
        depth=depth,
        hidden_size=VISION_WIDTH[size],
        intermediate_size=2 * VISION_WIDTH[size],
        num_heads=2 if size == "tiny" else 4,
        out_hidden_size=shape.hidden,
        patch_size=patch_size,
        spatial_merge_size=2,
        temporal_patch_size=2,
        **family,
    )


def _qwen_ids(tokenizer) -> dict:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _build_qwen2_5_vl(size: str):
    """Qwen2.5-VL: windowed vision attention (112-pixel windows, as released) except in the last block,
    which is a full-attention block (``fullatt_block_indexes``), as in the released checkpoints."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    shape = LM_SHAPES[size]
    tokenizer = _train_tokenizer(QWEN_SPECIALS)
    depth = VISION_DEPTH[size]
    config = Qwen2_5_VLConfig(
        text_config=_text_config(
            shape,
            _vocab_size(tokenizer),
            tokenizer,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": _mrope_sections(shape)},
        ),
        vision_config=_qwen_vision_config(
            size, depth, shape, patch_size=14, window_size=112, fullatt_block_indexes=[depth - 1], tokens_per_second=2,
        ),
        tie_word_embeddings=True,
        **_qwen_ids(tokenizer),
    )
    return Qwen2_5_VLForConditionalGeneration(config), _qwen2_processor(Qwen2_5_VLProcessor, tokenizer)


def _build_qwen3_vl(size: str, moe: bool = False):
    """Qwen3-VL (dense): 16-pixel patches, learned position grid, DeepStack from the first vision blocks
    into the first LLM layers (three of them, as released), interleaved M-RoPE, head_dim with q/k norms.
    ``moe``: Qwen3-VL-MoE (``qwen3_vl_moe``: the same model with 8 experts, 2 active, per MLP)."""
    import transformers

    config_class, model_class = (
        (transformers.Qwen3VLMoeConfig, transformers.Qwen3VLMoeForConditionalGeneration) if moe
        else (transformers.Qwen3VLConfig, transformers.Qwen3VLForConditionalGeneration)
    )
    shape = LM_SHAPES[size]
    experts = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=shape.intermediate // 2) if moe else {}
    tokenizer = _train_tokenizer(QWEN_SPECIALS)
    depth = VISION_DEPTH[size] + 2  # 3 DeepStack blocks before the last one
    config = config_class(
        text_config=_text_config(
            shape,
            _vocab_size(tokenizer),
            tokenizer,
            head_dim=shape.hidden // shape.heads,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": _mrope_sections(shape),
                "mrope_interleaved": True,
            },
            **experts,
        ),
        vision_config=_qwen_vision_config(
            size, depth, shape, patch_size=16, num_position_embeddings=64 if size == "tiny" else 256,
            deepstack_visual_indexes=list(range(depth - 4, depth - 1)),
        ),
        tie_word_embeddings=True,
        **_qwen_ids(tokenizer),
    )
    return model_class(config), _qwen3_processor(tokenizer)


def _qwen3_processor(tokenizer):
    """The Qwen3-VL processor of the dev models (Qwen3-VL and Qwen3.5 alike): 16-pixel patches, 2x2 merge,
    64*64 .. 32*32*256 pixels per image / frame, the Qwen3 chat template."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    pixels = {"shortest_edge": 64 * 64, "longest_edge": 32 * 32 * 256}
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, patch_size=16, merge_size=2),
        video_processor=Qwen3VLVideoProcessor(size=pixels, patch_size=16, merge_size=2),
        tokenizer=tokenizer,
        chat_template=QWEN3_CHAT_TEMPLATE,
    )


_BUILDERS = {
    "qwen2_vl": _build_qwen2_vl,
    "llava_onevision": _build_llava_onevision,
    "qwen2_5_vl": _build_qwen2_5_vl,
    "qwen3_vl": _build_qwen3_vl,
    "qwen3_5": lambda size: _qwen3_5().build_qwen3_5(size),
    # not in FAMILIES (the test suite covers them with their own few oracles, to keep CI short)
    "qwen3_vl_moe": lambda size: _build_qwen3_vl(size, moe=True),
    "qwen3_5_moe": lambda size: _qwen3_5().build_qwen3_5(size, moe=True),
}


#: every family ``make_model`` builds (FAMILIES first), e.g. for listing demo models
BUILDABLE = tuple(_BUILDERS)


def lm_layout(family: str, size: str) -> tuple[int, list[str] | None]:
    """(decoder layers, layer types or None for a dense LLM) of the dev model ``make_model`` builds, without
    building it (Qwen3.5: :data:`vitcop_cli.devmodels_qwen3_5.LAYERS` layers, full attention every 4th)."""
    if family.startswith("qwen3_5"):
        layers = _qwen3_5().LAYERS
        return layers, ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(layers)]
    return LM_SHAPES[size].layers, None


def _qwen3_5():
    """The Qwen3.5 (hybrid linear-attention) builders live in their own module."""
    from . import devmodels_qwen3_5

    return devmodels_qwen3_5


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
        tokenizer = _train_tokenizer(QWEN_SPECIALS)
        processor = cls(
            image_processor=Qwen2VLImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}),
            video_processor=Qwen2VLVideoProcessor(),
            tokenizer=tokenizer,
            chat_template=QWEN_CHAT_TEMPLATE,
        )
        specials = QWEN_SPECIALS
    elif family in ("qwen3_vl", "qwen3_5"):  # 16-pixel patches: 64*32*32 .. 16384*32*32 per image, video as released
        from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

        tokenizer = _train_tokenizer(QWEN_SPECIALS)
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

        tokenizer = _train_tokenizer(LLAVA_SPECIALS)
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
