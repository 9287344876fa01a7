"""What every dev-model builder shares: LLM shapes, special tokens, chat templates, the tokenizer, config parts.

Contract: pure builders of config dicts and processor objects (transformers imported inside the functions, so
importing this module is cheap). The family builders (:mod:`.qwen2_vl`, :mod:`.qwen2_5_vl`, :mod:`.qwen3_vl`,
:mod:`.qwen3_5`, :mod:`.llava_onevision`) depend on this module and never on each other; the registry that
picks one by family name is :mod:`vitcop_cli.models.devmodels`.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def train_tokenizer(specials: list[str], vocab_size: int = 600):
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


def vocab_size(tokenizer) -> int:
    return (len(tokenizer) + 63) // 64 * 64


def text_config(shape: LMShape, vocab: int, tokenizer, **extra) -> dict:
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


def mrope_sections(shape: LMShape) -> list[int]:
    """M-RoPE sections (t, h, w) adding up to head_dim / 2, in the released checkpoints' proportions."""
    half = shape.hidden // shape.heads // 2
    return [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]


def qwen_vision_config(size: str, depth: int, shape: LMShape, *, patch_size: int, **family) -> dict:
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


def qwen_ids(tokenizer) -> dict:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def qwen2_processor(processor_cls, tokenizer):
    """A Qwen2-VL-style processor (Qwen2-VL image / video processors) with small pixel bounds."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    pixels = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 64}
    return processor_cls(
        image_processor=Qwen2VLImageProcessor(size=pixels),
        video_processor=Qwen2VLVideoProcessor(size=pixels),
        tokenizer=tokenizer,
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def qwen3_processor(tokenizer):
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
