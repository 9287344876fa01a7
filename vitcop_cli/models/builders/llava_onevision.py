"""Random-weight LLaVA-OneVision checkpoints (``llava_onevision``): a SigLIP tower, a Qwen2 LLM, anyres pinpoints."""

from __future__ import annotations

from .base import (
    LLAVA_CHAT_TEMPLATE,
    LLAVA_SPECIALS,
    LM_SHAPES,
    VISION_DEPTH,
    VISION_WIDTH,
    text_config,
    train_tokenizer,
    vocab_size,
)


def build(size: str):
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    shape = LM_SHAPES[size]
    tokenizer = train_tokenizer(LLAVA_SPECIALS)
    image_size, patch = 112, 14  # 8x8 patches per frame, pooled to 4x4 tokens for video
    pinpoints = [[112, 112], [112, 224], [224, 112], [224, 224]]
    config = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", **text_config(shape, vocab_size(tokenizer), tokenizer)),
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
