"""Qwen2.5-VL adapter (model_type ``qwen2_5_vl``): the Qwen2-VL plumbing plus the encoder's window order.

Vision encoder: ``model.model.visual``. Before its blocks it permutes the patches into windows
(``window_index``: a permutation of the merge units — 2x2 patch groups = LLM tokens — so every window is
contiguous); blocks in ``fullatt_block_indexes`` attend within one temporal patch (2 video frames) or
image, the others within one window (``window_size`` pixels square, inside one temporal patch). The
merger runs in window order and the model restores the original order with ``argsort(window_index)``.

Stage I (choices, per the spec's "the block that feeds the projector"):
- Block: the last one (``blocks[-1]``), whose output the merger reads. In the released checkpoints it is
  a full-attention block (``fullatt_block_indexes`` ends with ``depth - 1``).
- Attention units: exactly the ``cu_seqlens`` that block receives — for a full-attention block one
  pseudo-CLS query per temporal patch / image, for a windowed block one per window (a window is the unit
  that block really attends within). Per-frame top-k and VIC still work per temporal patch / image.
- Order: scores (summed over each 2x2 merge unit) and VIC features (that block's keys *before* the
  rotary embedding, heads concatenated, mean over the merge unit) are computed in window order and put
  back into the original token order with ``argsort(window_index)`` — the model's own restoring step —
  so they line up with the LLM's placeholder tokens. ``window_index`` comes from ``compat``.

Encoder reuse: windows never cross a temporal patch and ``window_index`` orders the patches temporal-
patch-major with the same in-patch permutation for every patch, so a call shrunk to its distinct temporal
patches gives each patch the same window layout; ``last_hidden_state`` (left in window order by the
model) and ``pooler_output`` (restored) are both temporal-patch-major and spread back per patch.

Language model: Qwen2 with M-RoPE, as Qwen2-VL. Temporal positions are scaled by
``second_per_grid_ts`` (``tokens_per_second`` x seconds per temporal patch); the position ids the language
model receives are computed from the unpruned prompt, so every kept token keeps its original (t, h, w)
position. ``processor_kwargs`` passes the source's fps and the sampled frame indices, so the processor's
``second_per_grid_ts`` reflects the real sampling rate (not a guessed fps).
"""

from __future__ import annotations

import torch

from .. import compat
from .qwen2_vl import Qwen2VLAdapter


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    model_types = ("qwen2_5_vl",)
    rotary = staticmethod(compat.qwen2_5_vl_text_rotary)
    vision_rotary = staticmethod(compat.qwen2_5_vl_vision_rotary)

    def encoder_order(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """``window_index``: the blocks run over merge units in window order."""
        return compat.qwen_vision_window_index(self.vision_encoder, args, kwargs)

    def processor_kwargs(self, processor, kind, *, max_pixels, min_pixels, visual=None):
        """Qwen2-VL's kwargs, plus the video's real metadata (fps and sampled frame indices)."""
        kwargs, warnings = super().processor_kwargs(
            processor, kind, max_pixels=max_pixels, min_pixels=min_pixels, visual=visual
        )
        return _with_video_metadata(kwargs, kind, visual), warnings


def _with_video_metadata(kwargs: dict, kind: str, visual) -> dict:
    """Add ``video_metadata`` for a decoded video whose source fps is known (shared with Qwen3-VL)."""
    if kind != "video" or visual is None or not getattr(visual, "source_fps", None):
        return kwargs
    meta = compat.video_metadata(visual.total_frames, visual.source_fps, visual.indices)
    kwargs.setdefault("videos_kwargs", {})["video_metadata"] = [meta]
    return kwargs
