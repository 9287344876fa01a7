"""Random-weight Qwen2.5-VL checkpoints (``qwen2_5_vl``): windowed vision attention, a full-attention last block."""

from __future__ import annotations

from .base import (
    LM_SHAPES,
    QWEN_SPECIALS,
    VISION_DEPTH,
    mrope_sections,
    qwen2_processor,
    qwen_ids,
    qwen_vision_config,
    text_config,
    train_tokenizer,
    vocab_size,
)


def build(size: str):
    """Qwen2.5-VL: windowed vision attention (112-pixel windows, as released) except in the last block,
    which is a full-attention block (``fullatt_block_indexes``), as in the released checkpoints."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    shape = LM_SHAPES[size]
    tokenizer = train_tokenizer(QWEN_SPECIALS)
    depth = VISION_DEPTH[size]
    config = Qwen2_5_VLConfig(
        text_config=text_config(
            shape,
            vocab_size(tokenizer),
            tokenizer,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_sections(shape)},
        ),
        vision_config=qwen_vision_config(
            size, depth, shape, patch_size=14, window_size=112, fullatt_block_indexes=[depth - 1], tokens_per_second=2,
        ),
        tie_word_embeddings=True,
        **qwen_ids(tokenizer),
    )
    return Qwen2_5_VLForConditionalGeneration(config), qwen2_processor(Qwen2_5_VLProcessor, tokenizer)
