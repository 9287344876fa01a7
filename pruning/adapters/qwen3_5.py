"""Qwen3.5 adapter (model_type ``qwen3_5``, and ``qwen3_5_moe``): a hybrid linear-attention LLM.

Vision encoder and prompt: Qwen3-VL's (a ViT with a learned position grid and 2-D rotary, attention
within one temporal patch or image, 2x2 merger; ``<t seconds>`` timestamps in video prompts), but no
DeepStack. Stage I is therefore Qwen3-VL's (via :class:`Qwen3VLAdapter`): the last vision block, one
pseudo-CLS query per ``cu_seqlens`` unit, VIC features = that block's keys before rotary.

Language model: three of every four decoder layers are Gated DeltaNet (``linear_attention``: a
recurrent state of fixed size, keys L2-normalised inside the kernel, so their norms carry no signal);
the others (``full_attention``) are softmax attention with a KV cache, a sigmoid output gate on the
queries, ``q_norm`` / ``k_norm`` before *partial* interleaved M-RoPE. :meth:`layer_types` tells the
engine which is which: key-norm cuts (Stage II at Ls, Stage III at Ld, FastV at K) read the keys of the
layer before the cut, so presets snap those layers until that layer is full attention
(:meth:`pruning.presets.Preset.resolve_layers`). Keys / queries are the ``k_norm`` / ``q_norm``
outputs, (b, S, H_kv, d) / (b, S, H, d) — the vectors the attention uses before rotary.

``qwen3_5_moe``: the same attention and vision tower; the MLP is a mixture of experts with a shared
expert, so FLOPs count the active width (``num_experts_per_tok`` x ``moe_intermediate_size`` +
``shared_expert_intermediate_size``).
"""

from __future__ import annotations

from .. import compat
from ..flops import LinearAttention
from .base import FamilyAdapter, LMShape
from .qwen3_vl import Qwen3VLAdapter


class Qwen3_5Adapter(Qwen3VLAdapter):
    model_types = ("qwen3_5", "qwen3_5_moe")
    rotary = staticmethod(compat.qwen3_5_text_rotary)
    vision_rotary = staticmethod(compat.qwen3_5_vision_rotary)
    has_layer_additions = False

    def lm_shape(self) -> LMShape:
        """The base shape plus the DeltaNet mixer's shape, the gated queries and (MoE) the active MLP width."""
        shape = FamilyAdapter.lm_shape(self)
        cfg = self.model.config.get_text_config()
        extra = dict(
            query_gate=True,
            linear=LinearAttention(
                key_heads=cfg.linear_num_key_heads, value_heads=cfg.linear_num_value_heads,
                key_dim=cfg.linear_key_head_dim, value_dim=cfg.linear_value_head_dim,
                conv_kernel=cfg.linear_conv_kernel_dim,
            ),
        )
        if getattr(cfg, "num_experts_per_tok", None) and getattr(cfg, "moe_intermediate_size", None):
            active = cfg.num_experts_per_tok * cfg.moe_intermediate_size
            extra["intermediate"] = active + (getattr(cfg, "shared_expert_intermediate_size", 0) or 0)
        return LMShape(**{**shape.__dict__, **extra})

    def take_layer_additions(self, kwargs, visual_positions=None):
        return None
