"""The pruning engine behind ``pruning.attach(model, preset) -> PruningHandle``: ViTCoP inside a loaded model, per instance, removable.

Nothing is copied from transformers and no class is patched: every effect comes from hooks that the
handle registers on *this* model's modules and removes again (``handle.remove()`` or ``with``).
With an identity preset (``none``) no hook is registered at all, so the model is untouched.

Where each stage lives (all module lookups go through the family adapter):

- Stage I capture: the adapter's hooks on the vision block that feeds the projector record, per
  encoder call, pseudo-CLS saliency, key features, frame ids and grid positions per LLM token.
- Stage I cut + VIC: a forward pre-hook on the language model. At prefill it keeps, per frame, the
  top ``floor(v * n_frame)`` visual tokens, clusters them (VIC, per frame), and hands the language
  model a shorter ``inputs_embeds`` together with the *original* position ids of the survivors
  (Qwen2-VL: all three M-RoPE components; others: explicit 1-D positions). Dropped tokens never
  enter the LLM, so layer 0's cache holds non-visual + V tokens and every mask transformers builds
  is already the right size for it.
- Stage II / III: forward pre-hooks on decoder layers ``Ls`` and ``Ld`` read the keys of layer
  ``Ls-1`` / ``Ld-1`` (a forward hook on that layer's ``k_proj``; no attention weights anywhere, so
  SDPA / FlashAttention stay on), select with :func:`pruning.select.cluster_select` /
  :func:`pruning.select.smallest_k`, and shrink ``hidden_states``. Every later layer gets the
  rotary ``position_embeddings`` and the mask gathered to its survivors; ``position_ids`` (used
  only for FlashAttention's packed-sequence detection) is withheld, since survivors' positions
  have gaps that would read as packing.
- Decode: each layer's cache holds exactly the tokens it saw; a 4-D / 2-D mask that transformers
  builds for layer 0's length is sliced to the layer's cached columns plus the new tokens. Position
  ids of new tokens come from ``generate`` (original numbering), so they match the unpruned run.

Batch size 1 only: a larger batch raises a clear error at prefill.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .adapters import adapter_for
from .flops import decoder_prefill_flops
from .presets import Preset
from .saliency import key_norm
from .select import cluster_select, frame_group_ids, merge_values, per_frame_topk, smallest_k
from .stats import PruningReport
from .vic import cluster

# Processor outputs that an adapter's token forming may need besides the encoder's own inputs.
EXTRA_INPUTS = ("image_sizes", "batch_num_images")


@dataclass
class PrefillState:
    """Bookkeeping of one prefill. Index spaces: "orig" = the prompt as tokenised (length S);
    "seq" = the sequence entering layer 0 (after Stage I, length S')."""

    prompt_len: int
    n_visual: int  # N
    kept_orig: torch.Tensor  # (S',) orig index of each layer-0 token
    cur: torch.Tensor  # (S_cur,) seq index of each token currently in the decoder
    visual: torch.Tensor  # (S_cur,) bool: current token is a prunable visual token
    groups: torch.Tensor | None  # (n_visual_cur,) Stage-II group id per current visual token
    layer_cols: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> seq indices cached
    layer_visual: dict[int, int] = field(default_factory=dict)  # layer -> visual tokens processed
    gathered: dict | None = None  # position_embeddings / attention_mask for the current survivors
    stage_counts: dict[str, int] = field(default_factory=dict)


class PruningHandle:
    """Hooks of one attachment. ``remove()`` restores the model exactly; also a context manager."""

    def __init__(self, model, preset: Preset):
        self.model = model
        self.preset = preset
        self.adapter = adapter_for(model)
        self.shape = self.adapter.lm_shape()
        self.seconds = 0.0  # wall time spent inside pruning work, summed over calls
        self.last: PrefillState | None = None
        self._hooks: list = []
        self._records: list = []
        self._keys: dict[int, torch.Tensor] = {}
        self._input_ids: torch.Tensor | None = None
        self._extras: dict = {}
        self._in_prefill = False
        self._budget = None
        self._cuda = next(model.parameters()).device.type == "cuda"
        if not preset.is_identity:
            self._register()

    # ---- lifecycle -----------------------------------------------------------------------
    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def __enter__(self) -> "PruningHandle":
        return self

    def __exit__(self, *exc) -> bool:
        self.remove()
        return False

    def _now(self) -> float:
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _register(self) -> None:
        ad, lm = self.adapter, self.adapter.language_model
        shallow, deep = self.preset.resolve_layers(self.shape.layers)
        self._hooks += ad.attach_encoder_capture(self._records)
        self._hooks.append(self.model.register_forward_pre_hook(self._on_model, with_kwargs=True))
        self._hooks.append(lm.register_forward_pre_hook(self._on_lm_start, with_kwargs=True))
        self._hooks.append(lm.register_forward_hook(self._on_lm_end))
        for src in (shallow - 1, deep - 1):
            self._hooks.append(ad.k_proj(src).register_forward_hook(self._key_catcher(src)))
        for layer in range(shallow, self.shape.layers):
            self._hooks.append(
                ad.decoder_layers[layer].register_forward_pre_hook(self._layer_hook(layer), with_kwargs=True)
            )

    # ---- hooks ---------------------------------------------------------------------------
    def bind(self, inputs: dict) -> "PruningHandle":
        """Hand over processor outputs that token forming may need but ``generate`` does not pass to
        ``forward`` (LLaVA-OneVision images: ``image_sizes``, ``batch_num_images``)."""
        self._extras.update({k: inputs[k] for k in EXTRA_INPUTS if inputs.get(k) is not None})
        return self

    def _on_model(self, _module, args, kwargs):
        cache = kwargs.get("past_key_values")
        if cache is None or cache.get_seq_length() == 0:
            self._input_ids = kwargs.get("input_ids", args[0] if args else None)
            self._extras.update({k: kwargs[k] for k in EXTRA_INPUTS if kwargs.get(k) is not None})

    def _key_catcher(self, layer: int):
        def hook(_module, _args, output):
            if self._in_prefill:
                self._keys[layer] = output
        return hook

    def _on_lm_start(self, _module, args, kwargs):
        cache = kwargs.get("past_key_values")
        prefill = cache is None or cache.get_seq_length() == 0
        self._in_prefill = prefill
        if not prefill:
            self._slice_decode_mask_2d(kwargs)
            return args, kwargs
        started = self._now()
        try:
            self._prune_inputs(kwargs)
        finally:
            self._records.clear()
        self.seconds += self._now() - started
        return args, kwargs

    def _prune_inputs(self, kwargs) -> None:
        """Stage I at the language model's door: shorter inputs_embeds, original position ids."""
        embeds = kwargs["inputs_embeds"]
        if embeds.shape[0] != 1:
            raise NotImplementedError("ViTCoP pruning supports batch size 1; run prompts one at a time")
        if self._input_ids is None:
            raise RuntimeError("pruning needs input_ids at prefill (call the model or generate with them)")
        self.last = None
        if not bool(self.adapter.visual_mask(self._input_ids).any()):
            return  # a text-only prompt: nothing to prune
        state = self._stage1(embeds.shape[1])
        keep = state.kept_orig.to(embeds.device)
        kwargs["inputs_embeds"] = embeds[:, keep]
        pos = kwargs.get("position_ids")
        if pos is None:
            pos = torch.arange(embeds.shape[1], device=embeds.device)[None]
        kwargs["position_ids"] = pos[..., keep]
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.ndim == 2:
            kwargs["attention_mask"] = mask[:, keep]
        self.last = state

    def _on_lm_end(self, *_):
        if self._in_prefill and self.last is not None:
            self._keys.clear()
        self._in_prefill = False

    def _slice_decode_mask_2d(self, kwargs) -> None:
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.ndim == 2 and self.last is not None:
            s = self.last.prompt_len
            cols = torch.cat([self.last.kept_orig.to(mask.device), torch.arange(s, mask.shape[-1], device=mask.device)])
            kwargs["attention_mask"] = mask[:, cols]

    def _layer_hook(self, layer: int):
        def hook(_module, args, kwargs):
            state = self.last
            if state is None:
                return None
            if not self._in_prefill:
                return self._decode_layer(layer, args, kwargs)
            started = self._now()
            hidden = args[0] if args else kwargs["hidden_states"]
            b = self._budget
            if layer == b.shallow_layer and b.Rs < int(state.visual.sum()):
                hidden = self._stage2(state, hidden, b.Rs)
            if layer == b.deep_layer and b.Rd < int(state.visual.sum()):
                hidden = self._stage3(state, hidden, b.Rd)
            if state.gathered is None or state.gathered["len"] != state.cur.numel():
                state.gathered = self._gather_inputs(state, kwargs)
            kwargs["position_embeddings"] = state.gathered["rope"]
            kwargs["attention_mask"] = state.gathered["mask"]
            kwargs["position_ids"] = None
            state.layer_cols[layer] = state.cur
            state.layer_visual[layer] = int(state.visual.sum())
            args = (hidden, *args[1:]) if args else args
            if not args:
                kwargs["hidden_states"] = hidden
            self.seconds += self._now() - started
            return args, kwargs
        return hook

    def _decode_layer(self, layer: int, args, kwargs):
        """Slice a decode-step mask (built for layer 0's cache) to this layer's cached columns."""
        mask = kwargs.get("attention_mask")
        if not isinstance(mask, torch.Tensor):
            return None
        cols = self.last.layer_cols[layer].to(mask.device)
        s = self.last.kept_orig.numel()
        kwargs["attention_mask"] = mask[..., torch.cat([cols, torch.arange(s, mask.shape[-1], device=mask.device)])]
        return args, kwargs

    # ---- stages --------------------------------------------------------------------------
    def _stage1(self, prompt_len: int) -> PrefillState:
        vt = self.adapter.visual_tokens(self._input_ids, self._records, self._extras)
        n = vt.positions_in_seq.numel()
        p = self.preset
        kept = per_frame_topk(vt.saliency, vt.frame_ids, p.vision_keep) if p.vision_keep < 1 else torch.arange(n)
        kept = kept.to(vt.positions_in_seq.device)
        budget = p.budgets(n, self.shape.layers, n_after_stage1=kept.numel())
        self._budget = budget
        groups = None
        if budget.Rs < kept.numel():
            labels = self._vic(vt.features[kept], vt.grid_positions[kept], vt.frame_ids[kept])
            groups = frame_group_ids(labels, vt.frame_ids[kept])
        device = vt.positions_in_seq.device
        is_visual = torch.zeros(prompt_len, dtype=torch.bool, device=device)
        is_visual[vt.positions_in_seq] = True
        keep_mask = ~is_visual
        keep_mask[vt.positions_in_seq[kept]] = True
        kept_orig = keep_mask.nonzero().flatten()
        visual = is_visual[kept_orig]
        state = PrefillState(
            prompt_len=prompt_len,
            n_visual=n,
            kept_orig=kept_orig,
            cur=torch.arange(kept_orig.numel(), device=device),
            visual=visual,
            groups=groups,
        )
        state.layer_cols.update({layer: state.cur for layer in range(budget.shallow_layer)})
        state.layer_visual.update({layer: int(visual.sum()) for layer in range(budget.shallow_layer)})
        state.stage_counts = {"N": n, "V": kept.numel(), "Rs": kept.numel(), "Rd": kept.numel()}
        return state

    def _vic(self, features, positions, frame_ids) -> torch.Tensor:
        """VIC per frame (labels of different frames never mix); labels local to each frame."""
        labels = torch.full((features.shape[0],), -1, dtype=torch.long, device=features.device)
        p = self.preset
        for f in torch.unique(frame_ids).tolist():
            idx = (frame_ids == f).nonzero().flatten()
            labels[idx] = cluster(
                features[idx], positions[idx], dc=p.dc, center_fraction=p.cluster_fraction, radius=p.radius
            ).to(labels.device)
        return labels

    def _visual_keys(self, state: PrefillState, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(local index of each current visual token, its key-norm saliency t) from ``layer``'s keys."""
        keys = self._keys[layer][0]  # (S_cur, H_kv * d)
        vis = state.visual.nonzero().flatten().to(keys.device)
        t = key_norm(keys[vis].reshape(vis.numel(), self.shape.kv_heads, -1))
        return vis, t

    def _shrink(self, state: PrefillState, hidden, keep_local, values=None, value_local=None):
        keep_local, _ = keep_local.sort()
        new_hidden = hidden[:, keep_local]
        if values is not None:
            where = torch.searchsorted(keep_local, value_local)
            new_hidden[0, where] = values.to(new_hidden.dtype)
        state.cur = state.cur[keep_local.to(state.cur.device)]
        state.visual = state.visual[keep_local.to(state.visual.device)]
        return new_hidden

    def _stage2(self, state: PrefillState, hidden, budget: int):
        vis, t = self._visual_keys(state, self._budget.shallow_layer - 1)
        plan = cluster_select(state.groups.to(t.device), t, budget)
        idx, values = merge_values(hidden[0, vis], plan, rule=self.preset.merge)
        nonvis = (~state.visual).nonzero().flatten().to(vis.device)
        chosen = vis[idx]
        out = self._shrink(state, hidden, torch.cat([nonvis, chosen]), values, chosen)
        state.stage_counts["Rs"] = state.stage_counts["Rd"] = budget
        return out

    def _stage3(self, state: PrefillState, hidden, budget: int):
        vis, t = self._visual_keys(state, self._budget.deep_layer - 1)
        nonvis = (~state.visual).nonzero().flatten().to(vis.device)
        out = self._shrink(state, hidden, torch.cat([nonvis, vis[smallest_k(t, budget)]]))
        state.stage_counts["Rd"] = budget
        return out

    @staticmethod
    def _gather_inputs(state: PrefillState, kwargs) -> dict:
        cur = state.cur
        cos, sin = kwargs["position_embeddings"]
        rope = (cos.index_select(-2, cur.to(cos.device)), sin.index_select(-2, cur.to(sin.device)))
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            c = cur.to(mask.device)
            mask = mask.index_select(-1, c)
            if mask.ndim == 4:
                mask = mask.index_select(-2, c)
        return {"len": cur.numel(), "rope": rope, "mask": mask}

    # ---- report --------------------------------------------------------------------------
    def report(self, input_ids: torch.Tensor) -> PruningReport:
        """Stage counts, layer-averaged visual tokens, cache lengths and prefill FLOPs of the last prefill."""
        L = self.shape.layers
        s = input_ids.shape[1]
        if self.last is None:  # identity preset: nothing pruned
            n = int(self.adapter.visual_mask(input_ids).sum())
            counts = {"N": n, "V": n, "Rs": n, "Rd": n}
            seq = [s] * L
            visual = [n] * L
            shallow = deep = None
        else:
            st = self.last
            counts = st.stage_counts
            seq = [st.layer_cols[layer].numel() for layer in range(L)]
            visual = [st.layer_visual[layer] for layer in range(L)]
            shallow, deep = self._budget.shallow_layer, self._budget.deep_layer
        sh = self.shape
        flops = lambda lens: decoder_prefill_flops(  # noqa: E731
            lens, hidden=sh.hidden, n_heads=sh.heads, n_kv_heads=sh.kv_heads, head_dim=sh.head_dim,
            intermediate=sh.intermediate, vocab=sh.vocab,
        )
        pruned, full = flops(seq), flops([s] * L)
        layer_avg = sum(visual) / L
        return PruningReport(
            preset=self.preset.name,
            method="vitcop",
            n_visual=counts["N"],
            after_stage1=counts["V"],
            after_stage2=counts["Rs"],
            after_stage3=counts["Rd"],
            shallow_layer=shallow,
            deep_layer=deep,
            layer_averaged_visual=layer_avg,
            layer_averaged_ratio=layer_avg / counts["N"] if counts["N"] else 1.0,
            kv_cache_lengths=seq,
            prefill_flops=pruned,
            prefill_flops_unpruned=full,
            flops_ratio=pruned / full,
        )


def attach(model, preset: Preset) -> PruningHandle:
    """Attach ViTCoP with ``preset`` to ``model`` (one instance); returns the removable handle."""
    return PruningHandle(model, preset)
