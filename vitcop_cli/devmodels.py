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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FAMILIES = ("qwen2_vl", "llava_onevision")
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

# A Qwen2-VL style chat template (system default, vision placeholders inside the user turn).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
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
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

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
    model = Qwen2VLForConditionalGeneration(config)
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 64}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels),
        video_processor=Qwen2VLVideoProcessor(size=pixels),
        tokenizer=tokenizer,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    return model, processor


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


_BUILDERS = {"qwen2_vl": _build_qwen2_vl, "llava_onevision": _build_llava_onevision}


def make_model(family: str, out_dir: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Build and save a random-weight checkpoint of ``family`` at ``size`` into ``out_dir``.

    Deterministic for a given seed. Returns the folder. Raises ValueError for an unknown family/size.
    """
    import torch

    if family not in _BUILDERS:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    if size not in LM_SHAPES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
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
    return out
