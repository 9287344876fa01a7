"""What every model-family adapter provides — the only place that knows a model's insides.

An adapter wraps one loaded ``*ForConditionalGeneration`` instance and answers plumbing questions:
where the language model and its decoder layers are, which input ids are prunable visual tokens,
the LLM's shapes (for FLOPs), which processor kwargs a video / image needs, and — for Stage I —
how to hook the vision block whose output feeds the projector and turn what it sees into
per-LLM-token saliency, key features, frame ids and grid positions. Adapters contain no scoring
math: they call the pure functions of ``pruning.saliency`` / ``pruning.select``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .. import compat
from ..flops import LinearAttention


@dataclass(frozen=True)
class LMShape:
    """The LLM's real shapes, read from the loaded config (used for FLOPs and reports).

    layer_types: one ``full_attention`` / ``linear_attention`` per decoder layer (hybrid models);
    linear: the linear-attention mixer's shape when there are such layers; query_gate: softmax layers
    compute an output gate from a q projection twice as wide (Qwen3.5)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    layer_types: tuple[str, ...] = ()
    linear: LinearAttention | None = None
    query_gate: bool = False

    def types(self) -> tuple[str, ...]:
        """Each layer's type (all ``full_attention`` for a dense model)."""
        return self.layer_types or (compat.FULL_ATTENTION,) * self.layers

    def has_keys(self, layer: int) -> bool:
        """True when decoder layer ``layer`` computes keys (softmax attention with a KV cache)."""
        return self.types()[layer] == compat.FULL_ATTENTION


@dataclass
class VisualTokens:
    """Stage-I view of one prompt's visual tokens, in the order they appear in the sequence.

    Shapes (n = visual tokens of the prompt, D = key feature width of the saliency block):
        positions_in_seq  (n,) long   index of each visual token in the LLM input sequence
        saliency          (n,) float  pseudo-CLS / [CLS] attention mass (larger = more salient)
        frame_ids         (n,) long   unique id of the image / frame the token belongs to
        features          (n, D)      encoder keys (heads concatenated, mean over the merge group)
        grid_positions    (n, 2)      (row / H, col / W) of the token in its frame's token grid
    """

    positions_in_seq: torch.Tensor
    saliency: torch.Tensor
    frame_ids: torch.Tensor
    features: torch.Tensor
    grid_positions: torch.Tensor


@dataclass
class EncoderRecord:
    """One vision-encoder call as the Stage-I hooks captured it (adapter-specific ``payload``).

    Records are kept in call order. transformers encodes images before videos (in ``generate``'s
    pre-encoding and in ``forward`` alike), one call per modality, so the engine pairs records with
    the modalities present in the prompt in that order.
    """

    payload: dict


@dataclass
class TokenView:
    """One encoder call's outputs at LLM-token granularity (what the call puts in the sequence).

    saliency (n,), frame_ids (n,) local to the call, features (n, D), grid_positions (n, 2),
    structural (n,) bool — outputs that are not prunable (e.g. LLaVA's image-newline rows).
    """

    saliency: torch.Tensor
    frame_ids: torch.Tensor
    features: torch.Tensor
    grid_positions: torch.Tensor
    structural: torch.Tensor


class FamilyAdapter:
    """Base class; one subclass per model family, registered by ``config.model_type``."""

    model_types: ClassVar[tuple[str, ...]] = ()
    #: () -> the LLM's ``apply_rotary_pos_emb(q, k, cos, sin)`` (each adapter names its getter in ``compat``)
    rotary: ClassVar = None

    def __init__(self, model: nn.Module):
        self.model = model

    # ---- plumbing used by ask / timing / FLOPs -------------------------------------------
    @property
    def language_model(self) -> nn.Module:
        """The decoder stack module whose forward receives ``inputs_embeds`` for the LLM."""
        return self.model.model.language_model

    @property
    def decoder_layers(self) -> nn.ModuleList:
        return self.language_model.layers

    @property
    def vision_encoder(self) -> nn.Module:
        raise NotImplementedError

    def apply_rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate x (b, heads, s, d) with the LLM's own rotary function; cos / sin (b, s, d)."""
        return self.rotary()(x, x, cos, sin)[0]

    def q_proj(self, layer: int) -> nn.Module:
        """The module whose output is layer ``layer``'s queries, shape (b, S, H * head_dim)."""
        return self.decoder_layers[layer].self_attn.q_proj

    def k_proj(self, layer: int) -> nn.Module:
        """The module whose output is layer ``layer``'s keys, shape (b, S, H_kv * head_dim)."""
        return self.decoder_layers[layer].self_attn.k_proj

    def lm_shape(self) -> LMShape:
        cfg = self.model.config.get_text_config()
        heads = cfg.num_attention_heads
        types = compat.layer_types(self.model.config)
        return LMShape(
            layer_types=tuple(types) if compat.LINEAR_ATTENTION in types else (),
            layers=cfg.num_hidden_layers,
            hidden=cfg.hidden_size,
            heads=heads,
            kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
            head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
            intermediate=getattr(cfg, "intermediate_size", 0),
            vocab=cfg.vocab_size,
        )

    # ---- how frames are grouped (sampling follows the family) ------------------------------
    def frames_per_patch(self) -> int:
        """Video frames the vision encoder takes as one unit (a temporal patch); frame counts are rounded to a
        multiple of it. Default: the vision config's ``temporal_patch_size`` (Qwen: 2), else 1 (a frame each)."""
        vision = getattr(self.model.config, "vision_config", None)
        return int(getattr(vision, "temporal_patch_size", None) or 1)

    def frame_rounding_reason(self) -> str:
        """Why a frame count is rounded (shown in the ``--frames`` warning); "" when it never is."""
        n = self.frames_per_patch()
        if n == 1:
            return ""
        return "frames are paired into temporal patches" if n == 2 else f"frames are grouped {n} to a temporal patch"

    def min_video_frames(self) -> int:
        """Fewest frames the family's video processor accepts; a shorter video gets its last frame repeated up to
        it (:func:`pad_video_frames`). Default 1: the processor pads a partial temporal patch itself."""
        return 1

    def visual_token_ids(self) -> dict[str, int]:
        """{"image": id, "video": id} of the placeholder tokens the processor expands."""
        raise NotImplementedError

    def visual_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(b, S) bool: positions holding image or video placeholder tokens."""
        ids = torch.tensor(list(self.visual_token_ids().values()), device=input_ids.device)
        return torch.isin(input_ids, ids)

    def prunable_positions(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """(N,) sorted positions of prunable visual tokens: placeholders minus structural ones."""
        return (self.visual_mask(input_ids)[0] & ~self.structural_mask(inputs_embeds)).nonzero().flatten()

    def structural_mask(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """(S,) bool: tokens inside visual spans that must never be pruned (none by default)."""
        return torch.zeros(inputs_embeds.shape[1], dtype=torch.bool, device=inputs_embeds.device)

    def processor_kwargs(
        self, processor, kind: str, *, max_pixels: int | None, min_pixels: int | None, visual=None
    ) -> tuple[dict, list[str]]:
        """Extra kwargs for ``processor(...)`` for a ``kind`` ("video"/"image") input, plus warnings.

        ``visual``: the decoded input (``vitcop_cli.media.video.Visual``: source fps, frame count, sampled frame
        indices), for families whose prompt or positions depend on the frames' times; may be None."""
        return {}, []

    #: True when the model adds per-layer visual features inside the LLM (Qwen3-VL DeepStack); the engine
    #: then takes them over with :meth:`take_layer_additions` and re-applies them to the survivors.
    has_layer_additions: ClassVar[bool] = False

    def take_layer_additions(
        self, kwargs: dict, visual_positions: torch.Tensor | None = None
    ) -> dict[int, torch.Tensor] | None:
        """At the language model's prefill entry: remove the model's own per-layer visual additions from
        its forward ``kwargs`` and return ``{layer: rows (N, D)}`` — rows aligned with
        ``visual_positions`` (N,), the prunable visual positions in sequence order — to be added after
        decoder layer ``layer`` (None: no additions)."""
        return None

    # ---- encoder reuse (pruning.encoder_reuse) ---------------------------------------------
    def encoder_reuse_hooks(self, reuse, timed=lambda fn: fn) -> list:
        """Register the hooks that make the vision encoder encode each distinct temporal patch once:
        a forward pre-hook that groups the call's pixels per attention unit (temporal patch / frame),
        calls ``reuse.begin(...)`` and, when it says so, shrinks the call to the distinct groups; and a
        forward hook returning ``reuse.finish(output)``. ``timed`` wraps both. Returns the handles."""
        raise NotImplementedError(f"{type(self).__name__} does not support encoder reuse")

    @staticmethod
    def _shrink_and_spread(encoder: nn.Module, shrink, reuse, timed) -> list:
        """The two hooks of :meth:`encoder_reuse_hooks` on ``encoder``: ``shrink`` (a forward pre-hook with
        kwargs, the family's own) and the spreading of every output field back (``reuse.finish``)."""
        def spread(_module, _args, output):
            return reuse.finish(output)

        return [
            encoder.register_forward_pre_hook(timed(shrink), with_kwargs=True),
            encoder.register_forward_hook(timed(spread)),
        ]

    # ---- Stage I -------------------------------------------------------------------------
    def attach_encoder_capture(self, records: list[EncoderRecord], timed=lambda fn: fn, reuse=None) -> list:
        """Register hooks that append one :class:`EncoderRecord` per vision-encoder call.

        ``timed`` wraps the hooks that do scoring work, so the caller can count their time as pruning
        overhead. ``reuse``: the model's :class:`pruning.encoder_reuse.EncoderReuse`, attached *before*
        these hooks, or None; records of a call it shrank are expanded to the full call, so they are the
        records of the unmodified encoder. Returns the hook handles (the caller removes them)."""
        raise NotImplementedError

    def form_tokens(self, record: EncoderRecord, modality: str, extras: dict) -> TokenView:
        """Turn one captured call into per-LLM-token views, the way the model forms its tokens.

        ``extras`` holds processor outputs the model's token forming needs (e.g. ``image_sizes``)."""
        raise NotImplementedError

    def visual_tokens(self, input_ids: torch.Tensor, records: list[EncoderRecord], extras: dict) -> VisualTokens:
        """Line the captured calls up with the prunable visual tokens of ``input_ids`` (1, S)."""
        ids = self.visual_token_ids()
        present = [m for m in ("image", "video") if bool((input_ids[0] == ids[m]).any())]
        if len(present) != len(records):
            raise RuntimeError(
                f"captured {len(records)} vision-encoder call(s) for a prompt with {', '.join(present) or 'no'} input"
            )
        seq_pos, sal, fid, feat, grid = [], [], [], [], []
        frame_offset = 0
        for modality, record in zip(present, records):
            view = self.form_tokens(record, modality, extras)
            where = (input_ids[0] == ids[modality]).nonzero().flatten()
            if where.numel() != view.structural.numel():
                raise RuntimeError(
                    f"{modality} placeholders ({where.numel()}) do not match encoder outputs ({view.structural.numel()})"
                )
            keep = ~view.structural
            seq_pos.append(where[keep])
            sal.append(view.saliency[keep])
            fid.append(view.frame_ids[keep] + frame_offset)
            feat.append(view.features[keep])
            grid.append(view.grid_positions[keep])
            frame_offset += int(view.frame_ids.max()) + 1
        order = torch.cat(seq_pos).argsort()
        return VisualTokens(
            positions_in_seq=torch.cat(seq_pos)[order],
            saliency=torch.cat(sal)[order],
            frame_ids=torch.cat(fid)[order],
            features=torch.cat(feat)[order],
            grid_positions=torch.cat(grid)[order],
        )

    # ---- temporal layout (EVS) -----------------------------------------------------------
    def video_token_grids(self, input_ids: torch.Tensor, extras: dict) -> list[tuple[int, int, int]]:
        """(t, h, w) of each video in the prompt ``input_ids`` (1, S), in prompt order: t temporal patches
        of an h x w row-major grid of LLM tokens (after the model's spatial merge / pooling), so the
        video's prunable tokens are t * h * w, patch-major. ``extras``: processor outputs (e.g. grids)."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its video token layout")
