"""Random-weight Qwen2-VL checkpoints (``qwen2_vl``): 14-pixel patches, 2x2 merge, 2-frame temporal patches, M-RoPE."""

from __future__ import annotations

from .base import (
    LM_SHAPES,
    QWEN_SPECIALS,
    VISION_DEPTH,
    VISION_WIDTH,
    qwen2_processor,
    text_config,
    train_tokenizer,
    vocab_size,
)


def build(size: str):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    shape = LM_SHAPES[size]
    tokenizer = train_tokenizer(QWEN_SPECIALS)
    head_dim = shape.hidden // shape.heads
    half = head_dim // 2  # M-RoPE sections (t, h, w) must add up to head_dim / 2
    mrope = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = Qwen2VLConfig(
        text_config=text_config(
            shape,
            vocab_size(tokenizer),
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
    return Qwen2VLForConditionalGeneration(config), qwen2_processor(Qwen2VLProcessor, tokenizer)
