"""Qwen2-VL adapter (model_type ``qwen2_vl``): plumbing only.

Vision encoder: ``model.model.visual`` (a ViT with 2-D rotary embeddings, attention restricted to one
temporal patch = 2 video frames, or one image; no [CLS]). Its last block feeds the ``PatchMerger``,
which turns each 2x2 group of consecutive patches into one LLM token. Stage I therefore hooks the
last block: the pseudo-CLS query of each attention unit (``cu_seqlens`` segment) over that block's
rotary-embedded q / k, patch scores summed over each 2x2 merge group; VIC features are that block's
keys *before* the rotary embedding (heads concatenated), averaged over the merge group.

Language model: ``model.model.language_model`` (Qwen2 decoder with M-RoPE). Its forward receives the
3-component position ids computed from the *unpruned* prompt (``get_rope_index``), so gathering
them keeps every surviving token at its original (t, h, w) position; ``rope_deltas`` stay untouched.

Encoder reuse (:mod:`pruning.encoder_reuse`): a temporal patch is h * w consecutive patch rows of the
call and its own attention unit, its rotary positions depend on (h, w) only, so the distinct patches are
encoded as a grid of (distinct patches, h, w) per input and every output (patch rows, merged tokens) is
spread back per temporal patch; the Stage-I record of a shrunk call is expanded the same way, with frame
ids and grid positions from the full grid.

Subclasses (Qwen2.5-VL, Qwen3-VL) reuse all of this and override only what differs: ``vision_rotary``,
``saliency_block`` (the block feeding the merger), ``encoder_order`` (an encoder that runs its blocks
in another token order, e.g. Qwen2.5-VL's windows), ``q_proj`` / ``k_proj`` and ``processor_kwargs``.
"""

from __future__ import annotations

from fractions import Fraction

import torch

from .. import compat
from ..saliency import group_sum, pseudo_cls_attention
from .base import EncoderRecord, FamilyAdapter, TokenView


class Qwen2VLAdapter(FamilyAdapter):
    model_types = ("qwen2_vl",)
    rotary = staticmethod(compat.qwen2_vl_text_rotary)  # M-RoPE sections are already folded into cos / sin

    @property
    def vision_encoder(self):
        return self.model.model.visual

    def visual_token_ids(self) -> dict[str, int]:
        cfg = self.model.config
        return {"image": cfg.image_token_id, "video": cfg.video_token_id}

    def processor_kwargs(self, processor, kind, *, max_pixels, min_pixels, visual=None):
        """Video: the processor's own sampling off, qwen-vl-utils' total-pixel cap on; optional bounds."""
        sub = processor.video_processor if kind == "video" else processor.image_processor
        kwargs = {"do_sample_frames": False, "cap_pixels_per_frame": True} if kind == "video" else {}
        if max_pixels is not None or min_pixels is not None:
            kwargs["size"] = {
                "shortest_edge": int(min_pixels if min_pixels is not None else sub.size["shortest_edge"]),
                "longest_edge": int(max_pixels if max_pixels is not None else sub.size["longest_edge"]),
            }
        return {f"{kind}s_kwargs": kwargs}, []

    # ---- Stage I -------------------------------------------------------------------------
    #: () -> the vision encoder's ``apply_rotary_pos_emb_vision(q, k, cos, sin)`` (named in ``compat``)
    vision_rotary = staticmethod(compat.qwen2_vl_vision_rotary)

    def saliency_block(self):
        """The vision block whose output feeds the merger (the projector): the last one."""
        return self.vision_encoder.blocks[-1]

    def encoder_order(self, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """(n_tokens,) merge-unit order the encoder's blocks run in, if not the original (token) order:
        block outputs at merge-unit ``i`` belong to original token ``order[i]``. None = original order."""
        return None

    def encoder_reuse_hooks(self, reuse, timed=lambda fn: fn) -> list:
        """Groups = temporal patches (h * w consecutive patch rows each, an image is one), keyed by (h, w);
        a shrunk call gets the distinct patches' rows and a grid of (distinct patches, h, w) per input
        (inputs left with none dropped). Within one temporal patch the rows, windows (Qwen2.5-VL) and the
        merger's groups keep their order, so every output — one row per patch or per merged token, nothing
        else is accepted — is temporal-patch-major and spreads back."""
        visual = self.vision_encoder
        merge = visual.spatial_merge_size
        slots = (compat.QWEN_VISION_PIXELS, compat.QWEN_VISION_GRID)

        def shrink(_module, args, kwargs):
            pixels = compat.call_input(args, kwargs, compat.QWEN_VISION_PIXELS)
            grid = compat.call_input(args, kwargs, compat.QWEN_VISION_GRID)
            per_input = [tuple(int(v) for v in row) for row in grid.tolist()]
            sizes = [h * w for t, h, w in per_input for _ in range(t)]
            keys = [(h, w) for t, h, w in per_input for _ in range(t)]
            declined = compat.other_tensor_inputs(args, kwargs, slots)
            call = reuse.begin(pixels, sizes, keys, args, kwargs, declined, scales=(1, Fraction(1, merge * merge)))
            if not call.shrunk:
                return None
            input_of = [i for i, (t, _, _) in enumerate(per_input) for _ in range(t)]
            kept = [sum(input_of[g] == i for g in call.plan.encoded) for i in range(len(per_input))]
            new_grid = torch.tensor(
                [[n, h, w] for n, (_, h, w) in zip(kept, per_input) if n], dtype=grid.dtype, device=grid.device
            )
            args, kwargs = compat.call_with(
                args, kwargs, compat.QWEN_VISION_PIXELS, pixels.index_select(0, call.plan.encoded_rows(pixels.device))
            )
            return compat.call_with(args, kwargs, compat.QWEN_VISION_GRID, new_grid)

        return self._shrink_and_spread(visual, shrink, reuse, timed)

    def attach_encoder_capture(self, records: list[EncoderRecord], timed=lambda fn: fn, reuse=None) -> list:
        visual = self.vision_encoder
        block = self.saliency_block().attn
        merge = visual.spatial_merge_size
        rotate = self.vision_rotary()
        call: dict = {}

        def on_visual(_module, args, kwargs):
            call.clear()
            call["grid"] = compat.qwen_vision_grid(args, kwargs)  # the call the encoder runs (maybe shrunk)
            call["call"] = (args, dict(kwargs))  # the encoder order is computed in the timed hook below
            original = reuse.original_call() if reuse is not None else None  # before encoder reuse shrank it
            call["full_grid"] = compat.qwen_vision_grid(*original) if original is not None else call["grid"]

        def on_attn(_module, _args, kwargs):
            call["rope"], call["cu_seqlens"] = compat.qwen_vision_attn_inputs(kwargs)

        def on_qkv(_module, _args, output):
            n = output.shape[0]
            if n != int(call["grid"].prod(-1).sum()):
                raise RuntimeError(
                    f"the Stage-I capture saw an encoder call of {int(call['grid'].prod(-1).sum())} patches but the "
                    f"saliency block ran on {n}: encoder reuse must be attached before the capture hooks"
                )
            q, keys, _ = output.reshape(n, 3, block.num_heads, -1).unbind(1)  # (n, H, d) each, before rotary
            cos, sin = call["rope"]
            q, k = rotate(q, keys, cos, sin)
            cu = call["cu_seqlens"].to(q.device)
            units = torch.repeat_interleave(torch.arange(cu.numel() - 1, device=q.device), cu.diff())
            scores = pseudo_cls_attention(q.transpose(0, 1), k.transpose(0, 1), units, scale=block.scaling)
            group = merge * merge
            saliency = group_sum(scores, group)
            # VIC features: the keys BEFORE the rotary embedding (spec: VIC has its own spatial term;
            # rotated keys would count position twice)
            features = keys.reshape(n // group, group, -1).float().mean(1)
            order = self.encoder_order(*call["call"])
            if order is not None:  # back to the original token order, as the model restores its merger output
                restore = torch.argsort(order.to(q.device))
                saliency, features = saliency[restore], features[restore]
            if reuse is not None:  # a shrunk call: each distinct temporal patch's tokens back to every repeat
                saliency, features = reuse.expand(saliency), reuse.expand(features)
            records.append(
                EncoderRecord(
                    {
                        "saliency": saliency,
                        "frame_ids": self._frame_ids(call["full_grid"], merge, q.device),
                        "features": features,
                        "grid_positions": self._grid_positions(call["full_grid"], merge, q.device),
                    }
                )
            )

        return [
            visual.register_forward_pre_hook(on_visual, with_kwargs=True),
            block.register_forward_pre_hook(on_attn, with_kwargs=True),
            block.qkv.register_forward_hook(timed(on_qkv)),
        ]

    def form_tokens(self, record: EncoderRecord, modality: str, extras: dict) -> TokenView:
        """Already at token granularity (the 2x2 merge groups were reduced at capture time)."""
        p = record.payload
        return TokenView(
            saliency=p["saliency"],
            frame_ids=p["frame_ids"],
            features=p["features"],
            grid_positions=p["grid_positions"],
            structural=torch.zeros_like(p["frame_ids"], dtype=torch.bool),
        )

    @staticmethod
    def _frame_ids(grid_thw: torch.Tensor, merge: int, device) -> torch.Tensor:
        """(n_tokens,) frame id per LLM token: one frame per temporal patch (= 2 video frames) or image,
        numbered across the call's inputs in order."""
        sizes = [h * w // (merge * merge) for t, h, w in grid_thw.tolist() for _ in range(t)]
        return torch.arange(len(sizes), device=device).repeat_interleave(torch.tensor(sizes, device=device))

    @staticmethod
    def _grid_positions(grid_thw: torch.Tensor, merge: int, device) -> torch.Tensor:
        """(n_tokens, 2) of (row / H, col / W) per LLM token, H x W = the merged token grid of a frame."""
        out = []
        for t, h, w in grid_thw.tolist():
            hh, ww = h // merge, w // merge
            rows = torch.arange(hh, device=device).repeat_interleave(ww) / hh
            cols = torch.arange(ww, device=device).repeat(hh) / ww
            out.append(torch.stack([rows, cols], dim=1).repeat(t, 1))
        return torch.cat(out)

    def video_token_grids(self, input_ids: torch.Tensor, extras: dict) -> list[tuple[int, int, int]]:
        """``video_grid_thw`` (patches) with the 2x2 spatial merge: one temporal patch = 2 frames."""
        if not bool((input_ids[0] == self.visual_token_ids()["video"]).any()):
            return []
        grid = extras.get("video_grid_thw")
        if grid is None:
            raise RuntimeError(
                f"the {self.model.config.model_type} video token layout needs the processor's video_grid_thw: "
                "call handle.bind(inputs) before each generate"
            )
        merge = self.vision_encoder.spatial_merge_size
        return [(int(t), int(h) // merge, int(w) // merge) for t, h, w in grid.tolist()]
