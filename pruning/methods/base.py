"""The contract between the pruning engine and a pruning method.

The engine (:mod:`pruning.engine`) owns every mechanism: hooks, shrinking the sequence, gathering
rotary embeddings and masks for survivors, slicing decode masks to each layer's cache, timing and
the report. A method owns only *policy*: which visual tokens survive, where.

A method declares
- ``prune_layers``: decoder layers at whose entry it may drop / merge visual tokens (never 0);
- ``key_layers`` / ``query_layers``: layers whose ``k_proj`` / ``q_proj`` outputs it reads;
- ``needs_encoder_capture``: whether the adapter's Stage-I encoder hooks must run;

and implements
- ``planned_stages()``: the counts it planned (checked against what ran after each prefill);
- ``enter(ctx) -> LongTensor``: at the LLM's entry, the indices (into ``ctx.visual_positions``,
  sorted) of the visual tokens that enter layer 0;
- ``at_layer(layer, ctx) -> LayerChoice | None``: at a prune layer, which current visual tokens
  survive, and optionally their new hidden states (merging). ``None`` = keep all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..adapters import FamilyAdapter, LMShape
from ..presets import Preset


@dataclass
class EntryContext:
    """What a method sees at the LLM's entry (prefill, batch 1).

    input_ids (1, S); inputs_embeds (1, S, D); visual_positions (N,) sorted positions of the
    prunable visual tokens; records / extras: Stage-I encoder captures and processor extras.
    """

    input_ids: torch.Tensor
    inputs_embeds: torch.Tensor
    visual_positions: torch.Tensor
    records: list
    extras: dict


@dataclass
class LayerContext:
    """What a method sees at the entry of one of its prune layers (prefill, batch 1).

    hidden (1, S_cur, D) the layer's input; visual (S_cur,) bool, current prunable visual tokens;
    keys / queries: {layer: (1, S_cur, H * d)} raw projection outputs of the declared layers;
    rope: {layer: (cos, sin)} the rotary embeddings those layers received (already gathered to
    survivors), each (1, S_cur, head_dim).
    """

    hidden: torch.Tensor
    visual: torch.Tensor
    keys: dict
    queries: dict
    rope: dict


@dataclass
class LayerChoice:
    """keep: (R,) sorted indices into the current visual tokens (``ctx.visual.nonzero()`` order);
    values: optional (R, D) new hidden states for them (merged tokens), else unchanged."""

    keep: torch.Tensor
    values: torch.Tensor | None = None


class Method:
    """Base class of a pruning method (policy only). Subclasses set ``name`` and ``description``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_encoder_capture: ClassVar[bool] = False
    #: True when the method's choice reads only the visual tokens and what precedes them, so the pruned
    #: prefix (system + visual) is the same for every question and may be kept (:mod:`pruning.prefix`);
    #: False for a method that reads the question (FastV's last prompt token): it always runs single-pass
    question_independent: ClassVar[bool] = True

    def __init__(self, preset: Preset, adapter: FamilyAdapter, shape: LMShape):
        self.preset, self.adapter, self.shape = preset, adapter, shape
        self.prune_layers: tuple[int, ...] = ()
        self.key_layers: tuple[int, ...] = ()
        self.query_layers: tuple[int, ...] = ()

    @property
    def is_identity(self) -> bool:
        """True when this method with this preset never removes a token (the engine then hooks nothing)."""
        return self.preset.ratio >= 1

    def enter(self, ctx: EntryContext) -> torch.Tensor:
        raise NotImplementedError

    def at_layer(self, layer: int, ctx: LayerContext) -> LayerChoice | None:
        return None

    def planned_stages(self) -> list[int] | None:
        """The visual-token counts this method planned for the last prompt: [after entry, after each
        prune layer]. The engine checks them against what ran (``pruning.verify``); None = no count
        plan (only the structure — every hook fired, every prune layer ran, caches match — is checked)."""
        return None

    @classmethod
    def shortfall_reason(cls, n_layers: int) -> str:
        """Why this method can miss a preset's ratio, for the ratio warning (``pruning.stats``)."""
        return f"its budget clamps on this clip / {n_layers}-layer model"

    # helpers for subclasses
    @staticmethod
    def visual_keys(ctx: LayerContext, layer: int, kv_heads: int) -> torch.Tensor:
        """(n_visual, H_kv, d) keys of ``layer`` at the current visual tokens."""
        keys = ctx.keys[layer][0]
        vis = ctx.visual.nonzero().flatten().to(keys.device)
        return keys[vis].reshape(vis.numel(), kv_heads, -1)
