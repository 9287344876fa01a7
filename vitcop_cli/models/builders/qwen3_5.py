"""Random-weight Qwen3.5 checkpoints (``qwen3_5``, ``qwen3_5_moe``): the hybrid linear-attention family.

The released layout, scaled down: three Gated DeltaNet (linear-attention) layers, then one softmax
full-attention layer (``full_attention_interval`` 4), repeated; full-attention layers with a query gate,
q / k norms and *partial* interleaved M-RoPE (a quarter of each head rotated, as released); a
Qwen3-VL-style vision tower (16-pixel patches, learned position grid, 2x2 merge, no DeepStack) and the
Qwen3-VL processor (``<t seconds>`` timestamps in video prompts), as ``AutoProcessor`` picks for the family.

Both sizes have 12 LLM layers, so three are full attention (layers 3, 7, 11): the ViTCoP cuts need a
full-attention layer before each of Ls and Ld (snapped Ls = 4, Ld = 8). Widths follow
:data:`.base.LM_SHAPES`; DeltaNet heads are scaled like the released ones (value heads
= 2 x key heads, key width = half the value width). ``moe``: 8 experts, 2 active, plus the shared expert.
"""

from __future__ import annotations

from dataclasses import replace

from .base import (
    LM_SHAPES,
    QWEN_SPECIALS,
    VISION_DEPTH,
    qwen3_processor,
    qwen_ids,
    qwen_vision_config,
    text_config,
    train_tokenizer,
    vocab_size,
)

#: LLM depth of both dev sizes (three full-attention layers at the released interval of 4)
LAYERS = 12


def build(size: str, moe: bool = False):
    import transformers

    config_class, model_class = (
        (transformers.Qwen3_5MoeConfig, transformers.Qwen3_5MoeForConditionalGeneration) if moe
        else (transformers.Qwen3_5Config, transformers.Qwen3_5ForConditionalGeneration)
    )
    shape, text_extra, vision = config_parts(size, moe)
    tokenizer = train_tokenizer(QWEN_SPECIALS)
    text = text_config(shape, vocab_size(tokenizer), tokenizer, **text_extra)
    if moe:
        text.pop("intermediate_size")
    config = config_class(text_config=text, vision_config=vision, tie_word_embeddings=True, **qwen_ids(tokenizer))
    return model_class(config), qwen3_processor(tokenizer)


def config_parts(size: str, moe: bool = False):
    """(LLM shape, the Qwen3.5-specific text-config fields, the vision config) of a dev model of ``size``;
    shared with ``benchmarks/gpu_suite.py``, which builds the same shapes in memory."""
    shape = replace(LM_SHAPES[size], layers=LAYERS)
    tiny = size == "tiny"
    head_dim = 32 if tiny else 64
    rotary_half = head_dim // 8  # partial_rotary_factor 0.25, as released
    text = dict(
        head_dim=head_dim,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000000.0,
            "partial_rotary_factor": 0.25,
            "mrope_section": [rotary_half - 2 * (rotary_half // 4), rotary_half // 4, rotary_half // 4],
            "mrope_interleaved": True,
        },
        full_attention_interval=4,
        linear_conv_kernel_dim=4,
        linear_num_key_heads=2 if tiny else 8,
        linear_num_value_heads=4 if tiny else 16,
        linear_key_head_dim=16 if tiny else 64,
        linear_value_head_dim=16 if tiny else 64,
    )
    if moe:
        text.update(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=shape.intermediate // 2,
                    shared_expert_intermediate_size=shape.intermediate // 2)
    vision = qwen_vision_config(size, VISION_DEPTH[size], shape, patch_size=16,
                                 num_position_embeddings=64 if tiny else 256)
    return shape, text, vision
