"""LLaVA-OneVision / LLaVA-Video adapter (model_type ``llava_onevision``): plumbing only.

Vision encoder: ``model.model.vision_tower`` (SigLIP, no [CLS]); the block whose output feeds the
projector is ``encoder.layers[vision_feature_layer]`` (hidden_states[k] is the output of layer k-1).
Stage I hooks that block's q / k projections (no rotary in SigLIP) and computes one pseudo-CLS row
per frame / image crop — the unit SigLIP attends within.

Token forming uses the model's *own* functions on the captured per-patch channels
[saliency, keys...]: ``apply_pooling`` (bilinear 2x down-sampling) for video frames and
``pack_image_features`` (anyres crops, unpadding, interpolation, newline rows) for images, so
scores and features line up with the LLM tokens exactly as the model forms them.

Encoder reuse: SigLIP encodes each frame / crop alone (a batch row), so only distinct frames are
encoded and every tower output (one leading row per frame) is spread back before pooling / packing; the
Stage-I channels of a shrunk call are expanded the same way.

Choices the spec leaves open (documented here):
- The image-newline token (one per video, one per row of an image's anyres view) is structural:
  never pruned, never counted as visual.
- An image gives two token grids — the base view (first ``num_image_tokens`` tokens) and the
  anyres view (rows ending in a newline). Each is its own "frame" for Stage I and VIC; positions are
  (row / rows, col / cols) within that view's grid, rows/cols read off the newline layout.
"""

from __future__ import annotations

import math

import torch

from .. import compat
from ..saliency import pseudo_cls_attention
from .base import EncoderRecord, FamilyAdapter, TokenView


class LlavaOnevisionAdapter(FamilyAdapter):
    model_types = ("llava_onevision",)
    rotary = staticmethod(compat.qwen2_text_rotary)  # the LLM is Qwen2

    @property
    def vision_encoder(self):
        return self.model.model.vision_tower

    def visual_token_ids(self) -> dict[str, int]:
        cfg = self.model.config
        return {"image": cfg.image_token_id, "video": cfg.video_token_id}

    def structural_mask(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Image-newline rows: the model scatters its ``image_newline`` vector into the visual span."""
        newline = self.model.model.image_newline.to(inputs_embeds.device, inputs_embeds.dtype)
        return (inputs_embeds[0] == newline).all(-1)

    def processor_kwargs(self, processor, kind, *, max_pixels, min_pixels, visual=None):
        warnings = []
        if max_pixels is not None or min_pixels is not None:
            warnings.append("--max-pixels/--min-pixels are ignored: LLaVA-OneVision resizes frames to a fixed size")
        return ({"videos_kwargs": {"do_sample_frames": False}} if kind == "video" else {}), warnings

    # ---- Stage I -------------------------------------------------------------------------
    def _saliency_block(self):
        cfg = self.model.config
        tower = self.vision_encoder
        layers = getattr(tower, "vision_model", tower).encoder.layers
        feature_layer = cfg.vision_feature_layer
        if not isinstance(feature_layer, int):
            raise NotImplementedError("ViTCoP Stage I needs a single vision_feature_layer")
        # hidden_states has len(layers) + 1 entries; entry k is the output of layer k - 1.
        return layers[feature_layer % (len(layers) + 1) - 1].self_attn

    def encoder_reuse_hooks(self, reuse, timed=lambda fn: fn) -> list:
        """Groups = the frames / image crops of a SigLIP call (one row each along dim 0, attended alone);
        a shrunk call gets the distinct ones, and every output (``last_hidden_state``, ``hidden_states``,
        ``pooler_output``: one leading row per frame) is spread back before the model pools / packs."""
        tower = self.vision_encoder
        slots = (compat.SIGLIP_PIXELS,)

        def shrink(_module, args, kwargs):
            pixels = compat.call_input(args, kwargs, compat.SIGLIP_PIXELS)
            sizes = [1] * pixels.shape[0]
            call = reuse.begin(pixels, sizes, None, args, kwargs, compat.other_tensor_inputs(args, kwargs, slots))
            if not call.shrunk:
                return None
            distinct = pixels.index_select(0, call.plan.encoded_rows(pixels.device))
            return compat.call_with(args, kwargs, compat.SIGLIP_PIXELS, distinct)

        return self._shrink_and_spread(tower, shrink, reuse, timed)

    def attach_encoder_capture(self, records: list[EncoderRecord], timed=lambda fn: fn, reuse=None) -> list:
        attn = self._saliency_block()
        pending: dict = {}

        def on_q(_module, _args, output):
            pending["q"] = output

        def on_k(_module, _args, output):
            q, k = pending.pop("q"), output  # (B, P, H*d): B frames or image crops
            b, p, _ = k.shape
            heads = attn.num_heads
            frame_of_patch = torch.arange(b, device=k.device).repeat_interleave(p)
            split = lambda x: x.reshape(b * p, heads, -1).transpose(0, 1)  # noqa: E731  (H, B*P, d)
            scores = pseudo_cls_attention(split(q), split(k), frame_of_patch, scale=attn.scale).reshape(b, p, 1)
            channels = torch.cat([scores, k.float()], dim=-1)  # (B, P, 1 + D)
            if reuse is not None:  # a shrunk call: each distinct frame's channels back to every repeat
                channels = reuse.expand(channels)
            records.append(EncoderRecord({"channels": channels}))

        return [attn.q_proj.register_forward_hook(on_q), attn.k_proj.register_forward_hook(timed(on_k))]

    def form_tokens(self, record: EncoderRecord, modality: str, extras: dict) -> TokenView:
        channels = record.payload["channels"]
        if modality == "video":
            return self._form_video(channels)
        if extras.get("image_sizes") is None:
            raise RuntimeError(
                "LLaVA-OneVision image pruning needs the processor's image_sizes: call handle.bind(inputs) "
                "before generate (transformers pre-encodes images without passing them to forward)"
            )
        return self._form_images(channels, extras["image_sizes"], extras.get("batch_num_images"))

    def _form_video(self, channels: torch.Tensor) -> TokenView:
        """Frames -> pooled tokens (the model's own apply_pooling), then the trailing newline."""
        pooled = self.model.model.apply_pooling(channels)  # (F, T, 1 + D)
        f, t, _ = pooled.shape
        side = round(t**0.5)
        cells = torch.arange(t, device=pooled.device)
        grid = torch.stack([(cells // side) / side, (cells % side) / side], dim=1).repeat(f, 1)
        return self._view(pooled.reshape(f * t, -1), torch.arange(f).repeat_interleave(t), grid, newline_last=True)

    def _form_images(self, channels: torch.Tensor, sizes, per_sample) -> TokenView:
        """Crops -> packed image tokens via the model's own pack_image_features (newline rows kept)."""
        outer, cfg = self.model.model, self.model.config
        patching = [True] * len(sizes) if per_sample is None else [n == 1 for n in per_sample for _ in range(n)]
        num_patches = compat.llava_onevision_num_patches()
        counts = [
            num_patches(s, cfg.image_grid_pinpoints, cfg.vision_config.image_size) if do else 1
            for s, do in zip(sizes, patching)
        ]
        sentinel = torch.full((channels.shape[-1],), float("nan"), device=channels.device)
        packed, _ = outer.pack_image_features(
            torch.split(channels, counts), sizes, image_newline=sentinel, vision_aspect_ratio=cfg.vision_aspect_ratio
        )
        base = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
        side = round(base**0.5)
        rows, frames, grids = [], [], []
        for i, tokens in enumerate(packed):
            newline = tokens[:, 0].isnan()
            n_views = 2 if tokens.shape[0] > base + 1 else 1
            cells = torch.arange(base, device=tokens.device)
            grid = [torch.stack([(cells // side) / side, (cells % side) / side], dim=1)]
            ids = [torch.full((base,), 2 * i)]
            if n_views == 2:
                rest = tokens.shape[0] - base
                n_rows = int(newline[base:].sum())
                n_cols = rest // n_rows - 1
                r = torch.arange(n_rows, device=tokens.device).repeat_interleave(n_cols + 1)
                c = torch.arange(n_cols + 1, device=tokens.device).repeat(n_rows)
                grid.append(torch.stack([r / n_rows, c / n_cols], dim=1))
                ids.append(torch.full((rest,), 2 * i + 1))
            else:
                grid.append(torch.zeros(tokens.shape[0] - base, 2, device=tokens.device))
                ids.append(torch.full((tokens.shape[0] - base,), 2 * i))
            rows.append(tokens)
            frames.append(torch.cat(ids))
            grids.append(torch.cat(grid))
        tokens = torch.cat(rows)
        return self._view(tokens, torch.cat(frames), torch.cat(grids), structural=tokens[:, 0].isnan())

    @staticmethod
    def _view(tokens, frame_ids, grid, *, newline_last=False, structural=None) -> TokenView:
        device = tokens.device
        if newline_last:  # one newline token closes the whole video
            tokens = torch.cat([tokens, torch.full_like(tokens[:1], float("nan"))])
            frame_ids = torch.cat([frame_ids, frame_ids[-1:]])
            grid = torch.cat([grid, grid[-1:]])
            structural = torch.zeros(tokens.shape[0], dtype=torch.bool, device=device)
            structural[-1] = True
        return TokenView(
            saliency=tokens[:, 0],
            frame_ids=frame_ids.to(device),
            features=tokens[:, 1:],
            grid_positions=grid.clamp(max=1 - 1e-6),
            structural=structural,
        )

    def video_token_grids(self, input_ids: torch.Tensor, extras: dict) -> list[tuple[int, int, int]]:
        """One video: frames x (side x side) pooled tokens (``apply_pooling`` halves each side, rounding up),
        then the structural image-newline token, which is not part of the grid."""
        n = int((input_ids[0] == self.visual_token_ids()["video"]).sum())
        if n == 0:
            return []
        vc = self.model.config.vision_config
        side = math.ceil(vc.image_size // vc.patch_size / 2)
        frames, rest = divmod(n - 1, side * side)
        if rest or frames < 1:
            raise RuntimeError(f"{n} video tokens are not frames x {side}x{side} pooled tokens + one newline")
        return [(frames, side, side)]
