"""Random-weight Qwen3-VL checkpoints (``qwen3_vl``, ``qwen3_vl_moe``): DeepStack, interleaved M-RoPE, 16-pixel patches."""

from __future__ import annotations

from .base import (
    LM_SHAPES,
    QWEN_SPECIALS,
    VISION_DEPTH,
    mrope_sections,
    qwen3_processor,
    qwen_ids,
    qwen_vision_config,
    text_config,
    train_tokenizer,
    vocab_size,
)


def build(size: str, moe: bool = False):
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
    tokenizer = train_tokenizer(QWEN_SPECIALS)
    depth = VISION_DEPTH[size] + 2  # 3 DeepStack blocks before the last one
    config = config_class(
        text_config=text_config(
            shape,
            vocab_size(tokenizer),
            tokenizer,
            head_dim=shape.hidden // shape.heads,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": mrope_sections(shape),
                "mrope_interleaved": True,
            },
            **experts,
        ),
        vision_config=qwen_vision_config(
            size, depth, shape, patch_size=16, num_position_embeddings=64 if size == "tiny" else 256,
            deepstack_visual_indexes=list(range(depth - 4, depth - 1)),
        ),
        tie_word_embeddings=True,
        **qwen_ids(tokenizer),
    )
    return model_class(config), qwen3_processor(tokenizer)
