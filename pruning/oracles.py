"""Reference runs the pruned model is proven against (used by the tests and by ``vitcop doctor``).

:class:`KeyMask` turns an *unpruned* run into the reference for "dropping tokens at layer L": from
layer ``start`` on, every decoder layer gets a 4-D mask that hides the keys at ``dropped`` prompt
positions (causal otherwise), and no ``position_ids``. A pruned run that drops exactly those tokens at
layer ``start`` must give the same logits (to float tolerance) and the same greedy tokens.
"""

from __future__ import annotations

import torch

from . import compat


class KeyMask:
    """Hooks on ``adapter.decoder_layers[start:]``; ``dropped`` (k,) long prompt positions; removable."""

    def __init__(self, model, adapter, dropped: torch.Tensor, start: int):
        self.dropped, self.hooks = dropped, []
        for layer in range(start, len(adapter.decoder_layers)):
            self.hooks.append(adapter.decoder_layers[layer].register_forward_pre_hook(self._hook, with_kwargs=True))

    def _hook(self, module, args, kwargs):
        hidden = compat.layer_hidden(args, kwargs)
        q = hidden.shape[1]
        past = compat.cache_length(compat.find_cache(kwargs), module.self_attn.layer_idx)
        kv = past + q
        rows = torch.arange(past, kv, device=hidden.device)[:, None]
        cols = torch.arange(kv, device=hidden.device)[None, :]
        allowed = (cols <= rows) & ~torch.isin(cols, self.dropped.to(hidden.device))
        mask = torch.zeros(1, 1, q, kv, dtype=hidden.dtype, device=hidden.device)
        kwargs[compat.MASK] = mask.masked_fill(~allowed, torch.finfo(hidden.dtype).min)
        kwargs[compat.POSITION_IDS] = None
        return args, kwargs

    def remove(self):
        for h in self.hooks:
            h.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def dropped_before(adapter, input_ids: torch.Tensor, state, layer: int) -> torch.Tensor:
    """(k,) prompt positions of the visual tokens that layer ``layer`` of a pruned prefill no longer saw."""
    seen = set(state.kept_orig[state.cached(layer)].tolist())
    visual = adapter.visual_mask(input_ids)[0].nonzero().flatten().tolist()
    return torch.tensor([i for i in visual if i not in seen], dtype=torch.long)


class NeverPresent:
    """The reference for "dropped == never present": the model's own, unmodified decoder layers run one by
    one, and at every cut the hidden states, rotary embeddings and per-layer additions are *gathered* to the
    tokens the pruned run kept — so a dropped token never reaches any later layer, of any kind (softmax or
    linear attention). Where a key mask has no meaning (a Gated DeltaNet layer's recurrent state), this is
    the oracle: a pruned prefill + greedy decode must give the same logits and tokens.

    Built from an unpruned capture of the language model's inputs (``inputs_embeds`` (1, S, D), position
    ids, DeepStack additions when the family has them) and the pruned run's record (``state``: the prompt
    positions each layer kept, and the values a merging cut wrote at its layer, taken as given — the merge
    arithmetic has its own unit tests; ``state=None``: every layer keeps every token, the unpruned run).
    Masks are built here: causal over the survivors (4-D additive, so eager and SDPA get the same), none for
    one-token decode steps, and linear-attention layers get none. ``additive_mask=False`` instead passes no
    mask to the prefill's full-attention layers, as an unpadded SDPA prefill does (SDPA then applies
    causality itself): the kernel path of a real run, for timing (``benchmarks/survivor_reference.py``); it is
    refused under eager, where no mask means no causality.
    ``run(max_new_tokens)`` returns (greedy tokens (T,), logits (T, vocab)), like ``generate`` would;
    ``prefill(cache)`` runs the prompt only and returns the last layer's hidden states (1, S_last, D).
    """

    def __init__(self, model, adapter, inputs: dict, state, additive_mask: bool = True):
        if not additive_mask and compat.attn_implementation(model) == "eager":
            raise ValueError("additive_mask=False needs SDPA or FlashAttention: "
                             "eager attention without a mask is not causal")
        self.model, self.adapter, self.state, self.additive_mask = model, adapter, state, additive_mask
        self.lm = adapter.language_model
        captured = {}

        def grab(_module, _args, kwargs):
            captured.update(kwargs)
            raise _Captured

        hook = self.lm.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with torch.inference_mode():
                model(**inputs, use_cache=True)
        except _Captured:
            pass
        finally:
            hook.remove()
        embeds = captured[compat.INPUTS_EMBEDS]
        self.additions = adapter.take_layer_additions(dict(captured), None) or {} if adapter.has_layer_additions else {}
        pos = captured.get(compat.POSITION_IDS)
        if pos is None:
            pos = torch.arange(embeds.shape[1], device=embeds.device)[None]
        self.embeds, self.pos = embeds, pos
        self.visual_pos = adapter.prunable_positions(inputs["input_ids"], embeds)
        self.types = adapter.lm_shape().types()
        self.cache_kw = compat.cache_keyword(adapter.decoder_layers[0])
        self.rotary, self.norm, self.lm_head = compat.lm_parts(model, self.lm)

    def _rope(self, hidden, pos):
        """The model's own rotary embedding for position ids ``pos`` (as the language model splits them)."""
        return self.rotary(hidden, compat.rotary_position_ids(pos))

    def _causal(self, n: int, dtype, device):
        if not self.additive_mask:
            return None
        mask = torch.full((n, n), torch.finfo(dtype).min, dtype=dtype, device=device).triu(1)
        return mask[None, None]

    def _survivors(self) -> list[torch.Tensor]:
        """[(S_l,) long] the prompt positions layer l sees, for every decoder layer."""
        st, n = self.state, len(self.adapter.decoder_layers)
        if st is None:
            return [torch.arange(self.embeds.shape[1], device=self.embeds.device)] * n
        return [st.kept_orig[st.cached(layer)].to(self.embeds.device) for layer in range(n)]

    def prefill(self, cache) -> torch.Tensor:
        """Run the prompt through every decoder layer on its survivors, filling ``cache``; (1, S_last, D)."""
        written = {} if self.state is None else self.state.written
        hidden, current = None, None
        for layer, keep in enumerate(self._survivors()):
            if current is None:
                hidden = self.embeds[:, keep]
            elif not torch.equal(keep, current):
                hidden = hidden[:, torch.searchsorted(current, keep)]
            if layer in written:
                seq_idx, values = written[layer]
                rows = torch.searchsorted(keep, self.state.kept_orig[seq_idx].to(keep.device))
                hidden = hidden.clone()
                hidden[0, rows] = values.to(hidden.dtype)
            if current is None or not torch.equal(keep, current):
                rope = self._rope(hidden, self.pos[..., keep])
                mask = self._causal(keep.numel(), hidden.dtype, hidden.device)
            current = keep
            hidden = self._layer(layer, hidden, rope, mask, cache)
            if layer in self.additions:
                visual = torch.isin(keep, self.visual_pos.to(keep.device))
                rows = torch.searchsorted(self.visual_pos.to(keep.device), keep[visual])
                hidden[0, visual.nonzero().flatten()] += self.additions[layer][rows].to(hidden.dtype)
        return hidden

    def new_cache(self):
        return compat.new_dynamic_cache(self.lm.config)

    def run(self, max_new_tokens: int):
        L = len(self.adapter.decoder_layers)
        cache = self.new_cache()
        tokens, logits = [], []
        with torch.inference_mode():
            step_logits = self.logits(self.prefill(cache))
            next_pos = self.pos[..., -1:]
            for _ in range(max_new_tokens):
                logits.append(step_logits)
                token = step_logits.argmax(-1)
                tokens.append(token)
                next_pos = next_pos + 1
                hidden = self.model.get_input_embeddings()(token.view(1, 1))
                rope = self._rope(hidden, next_pos)
                for layer in range(L):
                    hidden = self._layer(layer, hidden, rope, None, cache)
                step_logits = self.logits(hidden)
        return torch.stack(tokens).flatten(), torch.stack(logits)

    def _layer(self, layer, hidden, rope, mask, cache):
        linear = self.types[layer] == compat.LINEAR_ATTENTION
        out = self.adapter.decoder_layers[layer](
            hidden, **{compat.ROPE: rope, compat.MASK: None if linear else mask, self.cache_kw: cache,
                       compat.USE_CACHE: True}
        )
        return compat.layer_output_hidden(out)

    def logits(self, hidden):
        """(vocab,) float logits of the last position of ``hidden`` (1, S, D): final norm, then ``lm_head``."""
        return self.lm_head(self.norm(hidden[:, -1:]))[0, -1].float()


class _Captured(Exception):
    """Stops the capture forward at the language model's entry."""
