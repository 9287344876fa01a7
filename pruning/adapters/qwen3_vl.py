"""Qwen3-VL adapter (model_type ``qwen3_vl``, and ``qwen3_vl_moe``): Qwen2-VL plumbing plus DeepStack.

Vision encoder: ``model.model.visual``: a ViT with learned (interpolated) position embeddings and 2-D
rotary, attention within one temporal patch (2 video frames) or image, no windows, no [CLS]. Its last
block feeds the main merger (2x2 patch groups -> one LLM token, patches of a group contiguous); blocks
in ``deepstack_visual_indexes`` additionally feed the DeepStack mergers. Stage I is Qwen2-VL's: the last
block, one pseudo-CLS query per ``cu_seqlens`` unit (= temporal patch / image) over its rotary-embedded
q / k, scores summed per merge group; VIC features = that block's keys before rotary, merge-group mean.

Encoder reuse: the learned position embeddings are interpolated per (h, w) and repeated over t (rotary
per (h, w) too), so encoding a subset of temporal patches as a (t', h, w) grid gives each the same
output; the DeepStack features (one merged-token row per layer) are spread back with the main output.

Language model: Qwen3 decoder (``q_norm`` / ``k_norm`` on each head before the rotary embedding) with
*interleaved* M-RoPE. The position ids it receives come from the unpruned prompt (``get_rope_index``:
video frames are split one temporal patch at a time, each preceded by its ``<t seconds>`` timestamp
text), so gathering them keeps each kept token's original (t, h, w) position; the prompt itself (the
timestamps) is never touched. Keys / queries for Stages II/III and FastV are the ``k_norm`` / ``q_norm``
outputs — the vectors the attention really uses before rotary, shape (b, S, H_kv, d) / (b, S, H, d).

DeepStack: the model adds ``deepstack_visual_embeds[i]`` (rows aligned with ``visual_pos_masks``, the
image / video placeholder positions in sequence order) to the hidden states after decoder layer i, for
the first ``len(deepstack_visual_indexes)`` layers. Under pruning the engine takes these additions over
(:meth:`take_layer_additions`): the model's own step is switched off for that prefill and the engine adds
each surviving token's own row after the same layer (a merged token carries its anchor's row — the
token it stands at, whose position it keeps). Identity presets leave the model's own path untouched.

``qwen3_vl_moe`` (Qwen3-VL-30B-A3B) has the same attention, vision encoder and DeepStack; only the MLP is
a mixture of experts, so FLOPs count the *active* MLP width (``num_experts_per_tok`` x
``moe_intermediate_size``).
"""

from __future__ import annotations

import torch

from .. import compat
from .base import LMShape
from .qwen2_5_vl import _with_video_metadata
from .qwen2_vl import Qwen2VLAdapter


class Qwen3VLAdapter(Qwen2VLAdapter):
    model_types = ("qwen3_vl", "qwen3_vl_moe")
    rotary = staticmethod(compat.qwen3_vl_text_rotary)  # the same function in qwen3_vl_moe's modeling file
    vision_rotary = staticmethod(compat.qwen3_vl_vision_rotary)
    has_layer_additions = True

    def q_proj(self, layer: int):
        """Queries as the attention uses them before rotary: ``q_norm`` output, (b, S, H, head_dim)."""
        return self.decoder_layers[layer].self_attn.q_norm

    def k_proj(self, layer: int):
        """Keys as the attention uses them before rotary: ``k_norm`` output, (b, S, H_kv, head_dim)."""
        return self.decoder_layers[layer].self_attn.k_norm

    def lm_shape(self) -> LMShape:
        shape = super().lm_shape()
        cfg = self.model.config.get_text_config()
        experts = getattr(cfg, "num_experts_per_tok", None)
        if experts and getattr(cfg, "moe_intermediate_size", None):
            dense = set(getattr(cfg, "mlp_only_layers", None) or [])
            if dense or getattr(cfg, "decoder_sparse_step", 1) != 1:
                raise NotImplementedError("FLOPs for a Qwen3-VL MoE with dense MLP layers are not modelled")
            shape = LMShape(**{**shape.__dict__, "intermediate": experts * cfg.moe_intermediate_size})
        return shape

    def min_video_frames(self) -> int:
        """Qwen3-VL's (and Qwen3.5's) video processor refuses fewer frames than one temporal patch (Qwen2-VL's pads
        a short video itself), so a 1-frame video is given its frame twice."""
        return self.frames_per_patch()

    def processor_kwargs(self, processor, kind, *, max_pixels, min_pixels, visual=None):
        """Qwen2-VL's kwargs, plus the video's real metadata: Qwen3-VL writes each temporal patch's time
        (``<t seconds>``) into the prompt from the source fps and the sampled frame indices.

        ``--max-pixels`` / ``--min-pixels`` are per frame (as for Qwen2-VL); Qwen3-VL's *video* processor
        reads ``size`` as bounds on the whole clip (frames rounded up to whole temporal patches x pixels),
        so for a video the given bounds are multiplied by that frame count."""
        kwargs, warnings = super().processor_kwargs(
            processor, kind, max_pixels=max_pixels, min_pixels=min_pixels, visual=visual
        )
        size = kwargs[f"{kind}s_kwargs"].get("size")
        if kind == "video" and size is not None and visual is not None:
            patch = getattr(processor.video_processor, "temporal_patch_size", 2) or 1
            frames = -(-visual.num_frames // patch) * patch
            if max_pixels is not None:
                size["longest_edge"] = int(max_pixels) * frames
            if min_pixels is not None:
                size["shortest_edge"] = int(min_pixels) * frames
        return _with_video_metadata(kwargs, kind, visual), warnings

    def take_layer_additions(self, kwargs: dict, visual_positions: torch.Tensor | None = None):
        """Take DeepStack over: remove it from the language model's ``kwargs`` (the model's loop then skips
        its own step) and return ``{layer: rows (N, D)}``, rows in sequence order of the visual positions.

        visual_positions: the engine's (N,) prunable visual positions; when given, ``visual_pos_masks``
        must mark exactly them (else a RuntimeError: rows would go to the wrong tokens)."""
        mask, embeds = compat.take_deepstack(kwargs)
        if embeds is None:
            return None
        if mask is None or mask.shape[0] != 1:
            raise RuntimeError("DeepStack additions without a batch-1 visual position mask cannot be carried")
        where = mask[0].nonzero().flatten()
        if visual_positions is not None and not torch.equal(where, visual_positions.to(where.device)):
            raise RuntimeError(
                f"DeepStack's visual positions ({where.numel()}) are not the prunable visual tokens "
                f"({visual_positions.numel()}); the engine cannot carry DeepStack to the survivors"
            )
        out = {}
        for layer, rows in enumerate(embeds):
            if rows.shape[0] != where.numel():
                raise RuntimeError(
                    f"DeepStack layer {layer} has {rows.shape[0]} rows for {where.numel()} visual tokens"
                )
            out[layer] = rows
        return out
