"""The pruning engine behind ``pruning.attach(model, preset, method) -> PruningHandle``.

Mechanism only — which tokens survive is the method's business (:mod:`pruning.methods`). Nothing is
copied from transformers and no class is patched: every effect comes from hooks that the handle
registers on *this* model instance and removes again (``handle.remove()`` or ``with``). With an
identity preset only two observer hooks are registered (they read input ids and count the prunable
visual tokens for the report, returning nothing), so the computation is untouched.

- Entry (forward pre-hook on the language model, prefill only): the method picks the visual tokens
  that enter layer 0; the language model gets a shorter ``inputs_embeds`` with the *original*
  position ids of the survivors (Qwen2-VL: all three M-RoPE components; otherwise explicit 1-D
  positions) and a 2-D mask gathered alike. Dropped tokens never enter the LLM, so layer 0's cache
  holds exactly the survivors and every mask transformers builds is the right size for it.
- Prune layers (forward pre-hooks on decoder layers): at the method's layers the hidden states
  shrink (and may be overwritten with merged values). From the first prune layer on, every layer
  gets the rotary ``position_embeddings`` and the mask gathered to its survivors; ``position_ids``
  (read only by FlashAttention's packed-sequence detection) is withheld, since survivors' positions
  have gaps that would read as packing. Keys / queries a method reads come from forward hooks on
  ``k_proj`` / ``q_proj`` of the declared layers — no attention weights anywhere, so SDPA and
  FlashAttention stay on.
- Every decoder layer (from layer 0) gets ``position_ids`` withheld during the prefill, and the
  language model always gets an explicit 2-D mask after the entry cut: gapped position ids must
  never reach transformers' packed-sequence detection (FlashAttention-2, or a mask-less call).
- Decode: each layer's cache holds exactly the tokens that layer saw; a 4-D / 2-D mask that
  transformers builds for layer 0's length (eager) is sliced to the layer's cached columns plus the
  new tokens. New tokens' position ids come from ``generate`` (original numbering), so they equal
  the unpruned run's.
- Prefill vs decode is decided from the KV cache (found by :mod:`pruning.compat` under any known
  keyword or by type) and cross-checked against the engine's own state: a decode step must find
  layer 0's cache exactly as long as the engine left it, and a one-token step that finds no cache at all
  right after a pruned prefill that left one raises ``PruningNotApplied`` at that step (it would otherwise
  be taken for a fresh prompt and decode unpruned, silently, for a caller of ``model.generate``); only
  all-zero position ids mark such a step as a fresh one-token prompt.
- Never silent: after each prefill the engine checks what ran against the method's plan and the
  cache transformers filled (:mod:`pruning.verify`), and raises ``PruningNotApplied`` otherwise.
  Modes it cannot serve are refused up front (``UnsupportedGeneration``): ``generate(use_cache=False)``,
  ``labels=``, chunked prefill, continuing a non-empty cache with several tokens, non-dynamic caches,
  dict-valued masks. A pruned ``model(...)`` call returns outputs per *surviving* token (logits of
  length S', not S), which is why ``labels`` are refused.
- Per-layer visual additions (Qwen3-VL DeepStack): when the adapter declares them, the engine takes
  them out of the language model's kwargs at entry (``adapter.take_layer_additions``), gathers the rows
  to the survivors at every cut (a merged token carries its anchor's row) and adds them after the
  decoder layer, at the survivors' current positions, with the model's own arithmetic.
- Timing: :class:`pruning.timing.Stopwatch` (CUDA events, one synchronisation per prefill).
- Encoder reuse (non-identity methods, on by default): :class:`pruning.encoder_reuse.EncoderReuse` makes
  the vision encoder encode each distinct temporal patch once and spreads its outputs back, so the model,
  Stage I, VIC and positions see the unmodified encoder's results (bit-identical on CPU; see that module).
  It is attached before the Stage-I capture hooks, which expand their records through it; its detection
  (before the encoder runs) and spreading (after) are timed under the tag ``encoder_reuse``.
  ``handle.encoder_patches`` = (total, encoded) of the last prefill. Identity presets attach none (they
  stay the unmodified model).

- Two-phase runs (:mod:`pruning.prefix`): :meth:`PruningHandle.build_prefix` prefills only the prompt's
  system + visual tokens ``[0, P)`` (pruned as above, verified, kept as a :class:`PrunedPrefix`);
  :meth:`PruningHandle.continue_prefix` gives a checked copy of a kept prefix's cache, with the engine's
  record and the position state of its prefill, so ``generate`` can prefill the question's own tokens
  ``[P, S)`` against it. That one multi-token continuation is the only one served: its 2-D / 4-D masks are
  sliced per layer like a decode step's (the question's tokens enter every layer, after the layer's
  cached survivors), and each step's reference-layer cache length is checked against the record.

Index spaces: "orig" = the prompt as tokenised (length S); "seq" = the sequence entering layer 0
(length S'). Batch size 1 only: a larger batch raises a clear error at prefill.
"""

from __future__ import annotations

import dataclasses

import torch

from . import compat, survivors
from .adapters import adapter_for
from .encoder_reuse import EncoderReuse
from .methods import EntryContext, LayerContext, method_class
from .prefill_report import build_report
from .prefix import PrunedPrefix, pixels_digest
from .presets import Preset
from .stats import PruningReport
from .survivors import PrefillState
from .timing import Stopwatch
from .verify import (
    PruningNotApplied,
    UnsupportedGeneration,
    check_cache,
    check_prefill,
    fail,
)

__all__ = ["PruningHandle", "PruningNotApplied", "PrunedPrefix", "UnsupportedGeneration", "attach"]

# Processor outputs that an adapter's token forming may need besides the encoder's own inputs.
EXTRA_INPUTS = ("image_sizes", "batch_num_images", "video_grid_thw")


class PruningHandle:
    """Hooks of one attachment. ``remove()`` restores the model exactly; also a context manager."""

    def __init__(self, model, preset: Preset, method: str = "vitcop", *, encoder_reuse: bool = True):
        self.model = model
        self.preset = preset
        self.adapter = adapter_for(model)
        self.shape = self.adapter.lm_shape()
        #: the layer whose KV-cache length stands for the prompt's (transformers' own choice: the first
        #: softmax-attention layer; layer 0 in a dense model)
        self._ref_layer = next(i for i in range(self.shape.layers) if self.shape.has_keys(i))
        self.method = method_class(method)(preset, self.adapter, self.shape)
        self.last: PrefillState | None = None
        self._hooks: list = []
        self._records: list = []
        self._keys: dict[int, torch.Tensor] = {}
        self._queries: dict[int, torch.Tensor] = {}
        self._rope: dict[int, tuple] = {}
        self._input_ids: torch.Tensor | None = None
        self._extras: dict = {}
        self._in_prefill = False
        self._uncached_ids: torch.Tensor | None = None  # prompt of the last use_cache=False forward
        self._expect_cache = True
        self._continuing = False  # a kept prefix was handed out: the next multi-token step is its question
        self._prefix_patches: tuple[int, int] | None = None  # encoder patches of the kept prefix in use
        self._watch = Stopwatch(next(model.parameters()).device)
        self.n_observed: int | None = None  #: identity: N seen at the last prefill (for the report)
        #: encoder reuse (each distinct temporal patch encoded once); None for identity presets or when off
        self._reuse: EncoderReuse | None = None
        self._encoder_reuse = encoder_reuse
        if self.method.is_identity:
            self._hooks.append(self.model.register_forward_pre_hook(self._on_model, with_kwargs=True))
            self._hooks.append(self.adapter.language_model.register_forward_pre_hook(self._observe, with_kwargs=True))
        else:
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

    @property
    def seconds(self) -> float:
        """Wall time spent inside pruning work (encoder scoring included), summed over prefills."""
        return self._watch.settle()

    @seconds.setter
    def seconds(self, value: float) -> None:
        self._watch.reset()
        self._watch.seconds = value

    @property
    def seconds_by_tag(self) -> dict[str, float]:
        """:attr:`seconds` split by where the work happened: ``encoder`` (Stage-I capture inside the vision
        encoder), ``encoder_reuse`` (repeat detection and spreading around it), ``entry`` (the cut at the
        LLM's door), ``layers`` (cuts and gathers in the decoder)."""
        self._watch.settle()
        return dict(self._watch.tags)

    @property
    def encoder_patches(self) -> tuple[int, int] | None:
        """(total, encoded) temporal patches of the last prefill's vision-encoder calls (Qwen: temporal
        patches / images; LLaVA-OneVision: frames / image crops): each distinct one is encoded once
        (:mod:`pruning.encoder_reuse`). None when reuse is not attached (identity presets,
        ``encoder_reuse=False``) or the last prefill ran no encoder."""
        if self._prefix_patches is not None:
            return self._prefix_patches
        return None if self._reuse is None else self._reuse.encoder_patches

    def bind(self, inputs: dict) -> "PruningHandle":
        """Hand over processor outputs that token forming may need but ``generate`` does not pass to
        ``forward`` (LLaVA-OneVision images: ``image_sizes``, ``batch_num_images``; the video token grid
        ``video_grid_thw`` for methods that need the temporal layout)."""
        self._extras.update({k: inputs[k] for k in EXTRA_INPUTS if inputs.get(k) is not None})
        return self

    def build_prefix(self, inputs: dict, length: int) -> PrunedPrefix:
        """Prefill the first ``length`` tokens of the prompt ``inputs`` (processor outputs, batch 1: system +
        visual, up to :func:`pruning.prefix.prefix_end`) under this handle and keep the result.

        Only methods whose choice never reads the question can keep a prefix (``UnsupportedGeneration``
        otherwise). The prefill is verified like any other (:mod:`pruning.verify`); the logits of one token
        are computed, since nothing is sampled from a prefix."""
        if not self.method.question_independent:
            raise UnsupportedGeneration(f"{self.method.name} reads the question, so its pruned prefix cannot be kept")
        s = inputs[compat.INPUT_IDS].shape[1]
        if not 0 < length < s:
            raise ValueError(f"a prefix of {length} tokens does not leave a question in a {s}-token prompt")
        part = {k: (v[:, :length] if k in compat.TOKEN_INPUTS and v is not None else v) for k, v in inputs.items()}
        self.bind(inputs)
        with torch.no_grad():
            out = self.model(**part, use_cache=True, logits_to_keep=1)
        cache = compat.output_cache(out)
        if cache is None:
            raise fail("the prefix prefill returned no KV cache")
        # the record the question needs; the DeepStack rows and gathered rope / masks served the prefill only
        state = None if self.method.is_identity or self.last is None else \
            dataclasses.replace(self.last, additions={}, gathered=None)
        n = state.n_visual if state is not None else (self.n_observed or 0)
        return PrunedPrefix(
            input_ids=part[compat.INPUT_IDS].clone(), cache=cache, state=state,
            position=compat.position_state(self.model), preset=self.preset.label, method=self.method.name,
            n_visual=n, encoder_patches=self.encoder_patches, pixels=pixels_digest(inputs),
        )

    def continue_prefix(self, prefix: PrunedPrefix):
        """A copy of ``prefix``'s cache for one question to continue (``generate(..., cache=copy)`` with the
        question's tokens and the whole prompt's attention mask), after checking it: built under this
        preset and method, every layer holding what the record says (:func:`pruning.verify.check_cache`).
        The engine takes over the prefix's record and position state; the question's step is then served."""
        if (prefix.preset, prefix.method) != (self.preset.label, self.method.name):
            raise ValueError(
                f"a prefix built under {prefix.method} / {prefix.preset} cannot continue under "
                f"{self.method.name} / {self.preset.label}"
            )
        cache, state = prefix.fork()
        if state is not None:
            check_cache(state, self.shape, cache, " of the kept prefix")
        compat.restore_position_state(self.model, prefix.position)
        self.last = state
        self.n_observed = prefix.n_visual
        self._prefix_patches = prefix.encoder_patches
        self._continuing = True
        return cache

    def _register(self) -> None:
        ad, m = self.adapter, self.method
        if self._encoder_reuse:  # first: the capture hooks below must see the call it shrank
            self._reuse = EncoderReuse(self.model, adapter=ad, timed=lambda fn: self._watch.wrap(fn, "encoder_reuse"))
            self._hooks += self._reuse.hooks
        if m.needs_encoder_capture:
            self._hooks += ad.attach_encoder_capture(
                self._records, timed=lambda fn: self._watch.wrap(fn, "encoder"), reuse=self._reuse
            )
        self._hooks.append(self.model.register_forward_pre_hook(self._on_model, with_kwargs=True))
        self._hooks.append(ad.language_model.register_forward_pre_hook(self._on_lm_start, with_kwargs=True))
        self._hooks.append(ad.language_model.register_forward_hook(self._on_lm_end))
        for layer in range(self.shape.layers):
            self._hooks.append(
                ad.decoder_layers[layer].register_forward_pre_hook(self._layer_hook(layer), with_kwargs=True)
            )
        if ad.has_layer_additions:
            for layer in range(self.shape.layers):
                self._hooks.append(ad.decoder_layers[layer].register_forward_hook(self._addition_hook(layer)))
        for layer in range(self.shape.layers):
            if not self.shape.has_keys(layer):
                mixer = compat.linear_mixer(ad.decoder_layers[layer])
                self._hooks.append(mixer.register_forward_pre_hook(self._mixer_counter(layer), with_kwargs=True))
        for layer in set(m.key_layers) | set(m.query_layers):  # after the gathering hooks above
            self._hooks.append(
                ad.decoder_layers[layer].register_forward_pre_hook(self._rope_catcher(layer), with_kwargs=True)
            )
        for layer in m.key_layers:
            self._hooks.append(ad.k_proj(layer).register_forward_hook(self._catcher(self._keys, layer)))
        for layer in m.query_layers:
            self._hooks.append(ad.q_proj(layer).register_forward_hook(self._catcher(self._queries, layer)))

    # ---- hooks ---------------------------------------------------------------------------
    def _on_model(self, _module, args, kwargs):
        input_ids = kwargs.get(compat.INPUT_IDS, args[0] if args else None)
        if not self.method.is_identity:
            self._refuse_unsupported(kwargs, input_ids)
        if compat.cache_length(compat.find_cache(kwargs), self._ref_layer) == 0:
            self._input_ids = input_ids
            self._extras.update({k: kwargs[k] for k in EXTRA_INPUTS if kwargs.get(k) is not None})

    def _refuse_unsupported(self, kwargs, input_ids) -> None:
        """Generation modes whose output would be wrong under pruning: refused before they run.

        ``use_cache=False`` is fine for one forward (outputs per surviving token), but a cache-less call
        whose prompt extends the previous cache-less prompt is ``generate(use_cache=False)`` re-running
        the whole sequence each step — refused."""
        why = None
        uncached = kwargs.get(compat.USE_CACHE) is False
        previous, self._uncached_ids = self._uncached_ids, (input_ids if uncached else None)
        if (
            uncached and previous is not None and input_ids is not None
            and input_ids.shape[-1] > previous.shape[-1]
            and torch.equal(input_ids[..., : previous.shape[-1]], previous)
        ):
            why = "generate(use_cache=False) (pruning keeps per-layer KV caches; generate with the cache on)"
        elif kwargs.get(compat.LABELS) is not None:
            why = "labels= (a pruned forward returns logits per surviving token, not per prompt token)"
        elif getattr(getattr(self.model, "generation_config", None), "prefill_chunk_size", None):
            why = "chunked prefill (generation_config.prefill_chunk_size)"
        if why:
            raise UnsupportedGeneration(f"visual-token pruning does not support {why}; use preset 'none' for it")

    def _observe(self, _module, _args, kwargs):
        """Identity presets: count the prunable visual tokens for the report; change nothing."""
        if compat.cache_length(compat.find_cache(kwargs), self._ref_layer) == 0 and self._input_ids is not None:
            self.n_observed = self.adapter.prunable_positions(self._input_ids, kwargs[compat.INPUTS_EMBEDS]).numel()

    def _mixer_counter(self, layer: int):
        """Record how many tokens a linear-attention mixer really processed in the prefill (run-time check)."""
        def hook(_module, args, kwargs):
            if self._in_prefill and self.last is not None:
                self.last.mixed[layer] = compat.mixer_hidden(args, kwargs).shape[1]
        return hook

    def _catcher(self, store: dict, layer: int):
        def hook(_module, _args, output):
            if self._in_prefill:
                store[layer] = output
        return hook

    def _rope_catcher(self, layer: int):
        def hook(_module, _args, kwargs):
            if self._in_prefill:
                self._rope[layer] = compat.layer_rope(kwargs, layer)
        return hook

    def _on_lm_start(self, _module, args, kwargs):
        cache = compat.find_cache(kwargs)
        past = compat.cache_length(cache, self._ref_layer)
        if isinstance(kwargs.get(compat.MASK), dict):
            raise UnsupportedGeneration("visual-token pruning does not support dict-valued attention masks")
        if cache is not None and not compat.is_dynamic_cache(cache):
            raise UnsupportedGeneration(
                f"visual-token pruning needs transformers' DynamicCache, got {type(cache).__name__} "
                "(static / quantized / offloaded caches and compiled generation are not supported)"
            )
        new_tokens = kwargs[compat.INPUTS_EMBEDS].shape[1]
        self._expect_cache = kwargs.get(compat.USE_CACHE) is not False
        if cache is None and new_tokens == 1 and self._expect_cache:
            self._check_cache_visible(kwargs)
        if self._continuing and past == 0:  # the question's step after continue_prefix lost sight of the cache
            self._continuing = False
            raise fail(
                f"the question after a kept {self.last.prompt_len if self.last else '?'}-token prefix found no KV "
                "cache among the language model's arguments, so it cannot continue the pruned prefix"
            )
        self._in_prefill = past == 0
        if not self._in_prefill:
            question, self._continuing = self._continuing, False
            if new_tokens > 1 and not (question and self.last is not None and self.last.decoded == 0):
                raise UnsupportedGeneration(
                    f"visual-token pruning cannot continue a non-empty KV cache ({past} tokens) with {new_tokens} "
                    "new tokens (chunked prefill, multi-turn cache reuse, assisted decoding) except a kept "
                    "prefix's question (PruningHandle.continue_prefix)"
                )
            if question and self.last is not None:
                self.last.question_len = new_tokens
            self._check_decode(past, new_tokens)
            self._slice_decode_mask_2d(kwargs)
            return args, kwargs
        try:
            with self._watch.span("entry"):
                self._enter(kwargs)
        finally:
            self._records.clear()
            self._extras.clear()
        return args, kwargs

    def _check_cache_visible(self, kwargs) -> None:
        """A one-token step with no KV cache the engine can find, right after a verified pruned prefill, is a
        decode step whose cache moved out of sight (a renamed keyword that the type scan misses too): taken
        for a prefill, it would run unpruned against the pruned cache and report nothing. Raise at that step.

        Only position ids that are all zero mark it as a fresh one-token prompt instead (``generate`` passes
        a decode step's original, non-zero positions); a one-token prompt given without position ids right
        after a pruned prefill is therefore refused too."""
        state = self.last
        if state is None or not state.left_cache:
            return
        pos = kwargs.get(compat.POSITION_IDS)
        if isinstance(pos, torch.Tensor) and pos.numel() and not bool(pos.any()):
            return
        raise fail(
            f"a one-token step after the pruned prefill of a {state.prompt_len}-token prompt found no KV cache "
            "among the language model's arguments, so it cannot be decoded against the pruned cache"
        )

    def _check_decode(self, past: int, new_tokens: int) -> None:
        """A step after the prefill (a question after a kept prefix, or a decode step) must find the
        reference layer's cache exactly as long as the engine left it."""
        state = self.last
        if state is None:
            return
        ref = self._ref_layer
        expected = state.cached(ref).numel() + state.decoded
        if past != expected:
            raise fail(f"a decode step found {past} cached tokens in layer {ref}, expected {expected}")
        state.decoded += new_tokens

    def _on_lm_end(self, _module, _args, output):
        try:
            state = self.last
            if self._in_prefill and state is not None:
                cache = compat.output_cache(output)
                check_prefill(
                    state, self.method.prune_layers, self.method.planned_stages(), self.shape, cache,
                    expect_cache=self._expect_cache,
                )
                state.cache_lengths = [
                    compat.cache_length(cache, layer) if cache is not None and self.shape.has_keys(layer)
                    else state.mixed.get(layer, state.cached(layer).numel())
                    for layer in range(self.shape.layers)
                ]
                state.left_cache = cache is not None
                self._watch.settle()
        finally:
            self._keys.clear()
            self._queries.clear()
            self._rope.clear()
            self._in_prefill = False

    def _enter(self, kwargs) -> None:
        """Entry: a shorter inputs_embeds with original position ids and an explicit gathered 2-D mask."""
        embeds = kwargs[compat.INPUTS_EMBEDS]
        if embeds.shape[0] != 1:
            raise NotImplementedError("visual-token pruning supports batch size 1; run prompts one at a time")
        if self._input_ids is None:
            raise RuntimeError("pruning needs input_ids at prefill (call the model or generate with them)")
        self.last = None
        visual_pos = self.adapter.prunable_positions(self._input_ids, embeds)
        if visual_pos.numel() == 0:
            return  # a text-only prompt: nothing to prune
        ctx = EntryContext(self._input_ids, embeds, visual_pos, self._records, self._extras)
        kept = self.method.enter(ctx).to(visual_pos.device)
        s = embeds.shape[1]
        is_visual = torch.zeros(s, dtype=torch.bool, device=visual_pos.device)
        is_visual[visual_pos] = True
        keep_mask = ~is_visual
        keep_mask[visual_pos[kept]] = True
        kept_orig = keep_mask.nonzero().flatten()
        state = PrefillState(
            prompt_len=s,
            n_visual=visual_pos.numel(),
            kept_orig=kept_orig,
            cur=torch.arange(kept_orig.numel(), device=kept_orig.device),
            visual=is_visual[kept_orig],
            n_visual_cur=kept.numel(),
            stages=[(0, kept.numel())],
        )
        additions = self.adapter.take_layer_additions(kwargs, visual_pos) or {}
        for layer, rows in additions.items():
            if rows.shape[0] != visual_pos.numel():
                raise RuntimeError(
                    f"layer {layer} visual additions have {rows.shape[0]} rows for {visual_pos.numel()} visual tokens"
                )
        state.additions = {layer: rows[kept.to(rows.device)] for layer, rows in additions.items()}
        state.visual_idx = state.visual.nonzero().flatten()
        keep = kept_orig.to(embeds.device)
        kwargs[compat.INPUTS_EMBEDS] = embeds[:, keep]
        pos = kwargs.get(compat.POSITION_IDS)
        if pos is None:
            pos = torch.arange(s, device=embeds.device)[None]
        kwargs[compat.POSITION_IDS] = pos[..., keep]
        mask = kwargs.get(compat.MASK)
        if mask is None:
            mask = torch.ones(1, s, dtype=torch.long, device=embeds.device)
        if not (isinstance(mask, torch.Tensor) and mask.ndim == 2):
            raise UnsupportedGeneration("visual-token pruning needs a 2-D attention mask (or none) at the language model")
        kwargs[compat.MASK] = mask[:, keep]
        self.last = state

    def _slice_decode_mask_2d(self, kwargs) -> None:
        mask = kwargs.get(compat.MASK)
        if isinstance(mask, torch.Tensor) and mask.ndim == 2 and self.last is not None:
            s = self.last.prompt_len
            cols = torch.cat([self.last.kept_orig.to(mask.device), torch.arange(s, mask.shape[-1], device=mask.device)])
            kwargs[compat.MASK] = mask[:, cols]

    def _layer_hook(self, layer: int):
        first_prune = min(self.method.prune_layers, default=self.shape.layers)

        def hook(_module, args, kwargs):
            state = self.last
            if state is None:
                return None
            if not self._in_prefill:
                return self._decode_layer(layer, args, kwargs)
            state.layer_seen.add(layer)
            kwargs[compat.POSITION_IDS] = None  # gapped positions would read as packing (FA2)
            if layer < first_prune:  # before the first cut: the LM's own rope / mask already fit
                state.layer_visual[layer] = state.n_visual_cur
                return args, kwargs
            with self._watch.span("layers"):
                hidden = compat.layer_hidden(args, kwargs)
                if layer in self.method.prune_layers:
                    ctx = LayerContext(hidden, state.visual, self._keys, self._queries, self._rope)
                    choice = self.method.at_layer(layer, ctx)
                    if choice is not None:
                        hidden = survivors.shrink(state, hidden, choice)
                        if choice.values is not None:  # merged tokens: (seq index, value) for reports / oracles
                            state.written[layer] = (state.cur[state.visual_idx], choice.values)
                    state.stages.append((layer, state.n_visual_cur))
                if state.gathered is None or state.gathered["len"] != state.cur.numel():
                    state.gathered = survivors.gather_rope(state, kwargs, layer)
                kwargs[compat.ROPE] = state.gathered["rope"]
                kwargs[compat.MASK] = survivors.gathered_mask(state, kwargs.get(compat.MASK))
                state.layer_cols[layer] = state.cur
                state.layer_visual[layer] = state.n_visual_cur
                return compat.with_layer_hidden(args, kwargs, hidden)
        return hook

    def _addition_hook(self, layer: int):
        """After decoder layer ``layer`` in the prefill: add its visual rows at the survivors' positions
        (the same in-place arithmetic as the model's own DeepStack step)."""
        def hook(_module, _args, output):
            state = self.last
            if not self._in_prefill or state is None or layer not in state.additions:
                return None
            hidden = compat.layer_output_hidden(output)
            idx = state.visual_idx.to(hidden.device)
            hidden[0, idx, :] = hidden[0, idx, :] + state.additions[layer].to(hidden.dtype)
            return None
        return hook

    def _decode_layer(self, layer: int, args, kwargs):
        """Slice a decode-step mask (built for layer 0's cache) to this layer's cached columns."""
        mask = kwargs.get(compat.MASK)
        if not isinstance(mask, torch.Tensor) or layer not in self.last.layer_cols:
            return None
        cols = self.last.layer_cols[layer].to(mask.device)
        s = self.last.kept_orig.numel()
        kwargs[compat.MASK] = mask[..., torch.cat([cols, torch.arange(s, mask.shape[-1], device=mask.device)])]
        return args, kwargs

    # ---- report --------------------------------------------------------------------------
    def report(self, input_ids: torch.Tensor) -> PruningReport:
        """The :class:`PruningReport` of the last prefill, which must be the prefill of ``input_ids`` (1, S)
        (see :func:`pruning.prefill_report.build_report`)."""
        return build_report(self, input_ids)


def attach(model, preset: Preset, method: str = "vitcop", *, encoder_reuse: bool = True) -> PruningHandle:
    """Attach ``method`` (default ViTCoP) with ``preset`` to ``model`` (one instance); removable.
    ``encoder_reuse``: encode each distinct temporal patch once (non-identity methods; see the module
    docstring); off gives the unmodified encoder path, for comparisons."""
    return PruningHandle(model, preset, method, encoder_reuse=encoder_reuse)
