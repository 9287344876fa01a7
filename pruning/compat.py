"""The one module that knows transformers' internals (names, keywords, signatures) the engine relies on.

transformers renames internals every few releases (5.24 renamed the ``past_key_values`` keyword of every
model / decoder forward to ``cache``), and a hook that reads a stale name silently stops pruning. So the
engine and the adapters never spell a transformers-internal name themselves: they ask this module, and
every answer here is written to survive the renames we know of and to fail loudly on ones we do not.

Contract:
- ``TESTED_RANGE`` is the inclusive range of transformers minor versions the test suite passes on;
  ``pyproject.toml`` declares exactly that range. ``version_note()`` says whether the installed release
  is inside it (used in every "pruning was not applied as planned" error and by ``vitcop doctor``).
- Cache: :func:`find_cache` finds the KV cache among a forward's keyword arguments under any known name
  and, failing that, by type (any :class:`transformers.Cache` value), so a further rename cannot make a
  decode step look like a prefill. :func:`cache_length` / :func:`output_cache` read it.
- Decoder-layer calls: :func:`layer_hidden` / :func:`with_layer_hidden` (hidden states come
  positionally or as ``hidden_states``), and the keyword names ``ROPE`` (``position_embeddings``, a
  (cos, sin) pair of (b, S, head_dim)), ``MASK`` (``attention_mask``), ``POSITION_IDS``.
- Model / language-model call keywords: ``INPUT_IDS`` (``input_ids``, (b, S)), ``INPUTS_EMBEDS``
  (``inputs_embeds``, (b, S, D)), ``USE_CACHE``, ``LABELS``.
- Rotary helpers the adapters use (imported lazily, so importing this module imports no model code).

Names the engine still depends on (listed for the maintainers; see also the adapters' docstrings):
forward keywords ``input_ids``, ``inputs_embeds``, ``attention_mask``, ``position_ids``,
``position_embeddings``, ``hidden_states``, ``labels``, ``use_cache``, ``cache`` / ``past_key_values``;
``Cache.get_seq_length(layer)``; ``DynamicCache``; model attributes ``model.model.language_model``,
``.layers``, ``.self_attn.{q,k}_proj`` (Qwen3-VL: ``.self_attn.{q,k}_norm``); the rotary functions below;
``config.get_text_config()`` (``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``, ``head_dim``,
``intermediate_size``, ``vocab_size``); ``config.image_token_id`` / ``video_token_id``; vision-encoder call
keywords ``grid_thw``, ``cu_seqlens``,
``position_embeddings``, ``window_index`` / ``cu_window_seqlens`` and encoder attributes
``spatial_merge_size``, ``window_size``, ``patch_size``, ``blocks[-1].attn.{qkv,num_heads,scaling}``;
``transformers.vision_utils.get_vision_window_index``; the layer-by-layer reference: the language model's
``rotary_emb`` / ``norm``, the model's ``lm_head``, 4-row position ids (text row first); hybrid models (Qwen3.5): ``config.layer_types``
(``full_attention`` / ``linear_attention``), decoder-layer attribute ``linear_attn``, cache entries
``cache.layers[i].conv_states[0]`` / ``.recurrent_states[0]``; Qwen3-VL language-model keywords
``visual_pos_masks`` / ``deepstack_visual_embeds``; ``transformers.video_utils.VideoMetadata``.
Video processors (frames in, :func:`video_frame_size`, :func:`resize_video_frames`, :func:`video_patch_writer`):
calls on ``meta`` clips, ``TorchvisionBackend.resize``, Qwen's ``patchify(videos, patch_size=, merge_size=,
temporal_patch_size=)``, ``normalize(image, mean, std, inplace=)``, ``_fuse_mean_std_and_rescale_factor`` and the
attributes ``patch_size`` / ``merge_size`` / ``temporal_patch_size`` / ``image_mean`` / ``image_std`` /
``rescale_factor`` / ``resample``.
Encoder reuse (``pruning.encoder_reuse``): the vision-encoder call inputs ``hidden_states`` (Qwen-VL patch
rows, 1st positional) and ``grid_thw`` (2nd) / ``pixel_values`` (SigLIP frames, 1st), the keyword
``output_attentions``, the rule that any other tensor input is precomputed geometry, and encoder outputs
whose tensor fields (``last_hidden_state``, ``pooler_output``, ``hidden_states``, Qwen3-VL
``deepstack_features``) have one leading row per patch / merged token / frame.
LLaVA-OneVision (``adapters/llava_onevision.py``): ``model.model.vision_tower`` and its
``vision_model.encoder.layers[k].self_attn.{q_proj,k_proj,num_heads,scale}`` (SigLIP);
``model.model.image_newline``; ``model.model.apply_pooling(features)``;
``model.model.pack_image_features(features, image_sizes, image_newline=, vision_aspect_ratio=)``;
``modeling_llava_onevision.image_size_to_num_patches``; config ``vision_feature_layer``,
``image_grid_pinpoints``, ``vision_aspect_ratio``, ``vision_config.{image_size,patch_size}``; processor
outputs ``image_sizes`` / ``batch_num_images`` (passed through ``handle.bind``, since transformers
pre-encodes images without passing them to ``forward``).
"""

from __future__ import annotations

from functools import lru_cache

#: inclusive (lowest, highest) transformers minor versions the suite is run on
TESTED_RANGE = ((5, 20), (5, 25))

ROPE = "position_embeddings"
INPUT_IDS = "input_ids"
INPUTS_EMBEDS = "inputs_embeds"
USE_CACHE = "use_cache"
LABELS = "labels"
MASK = "attention_mask"
POSITION_IDS = "position_ids"
HIDDEN = "hidden_states"
#: processor outputs with one entry per prompt token (cut with the prompt when only its prefix is prefilled)
TOKEN_INPUTS = (INPUT_IDS, MASK, "mm_token_type_ids", "token_type_ids")
#: the KV-cache keyword, newest spelling first (5.24 renamed past_key_values -> cache)
CACHE_KWARGS = ("cache", "past_key_values")


# ---- versions ------------------------------------------------------------------------------
def transformers_version() -> str:
    import transformers

    return transformers.__version__


def _minor(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def tested_range_text() -> str:
    (a, b), (c, d) = TESTED_RANGE
    return f"{a}.{b}-{c}.{d}"


def in_tested_range(version: str | None = None) -> bool:
    v = _minor(version or transformers_version())
    return TESTED_RANGE[0] <= v <= TESTED_RANGE[1]


def version_note() -> str:
    """One clause for error messages: the installed transformers and whether it is in the tested range."""
    v = transformers_version()
    where = "inside" if in_tested_range(v) else "outside"
    return f"transformers {v} is {where} the tested range {tested_range_text()}"


# ---- KV cache ------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _cache_types():
    from transformers.cache_utils import Cache, DynamicCache

    return Cache, DynamicCache


def find_cache(kwargs: dict):
    """The KV cache passed to a forward (any known keyword, else any Cache-typed value), or None."""
    for name in CACHE_KWARGS:
        if kwargs.get(name) is not None:
            return kwargs[name]
    cache_type = _cache_types()[0]
    for value in kwargs.values():
        if isinstance(value, cache_type):
            return value
    return None


def cache_length(cache, layer: int = 0) -> int:
    """Tokens held by ``layer``'s KV cache (0 for no cache)."""
    return 0 if cache is None else int(cache.get_seq_length(layer))


def output_cache(output):
    """The KV cache a model / language-model forward returned (``cache`` or ``past_key_values``)."""
    for name in CACHE_KWARGS:
        value = getattr(output, name, None)
        if value is not None:
            return value
    return None


def new_dynamic_cache(config):
    """An empty ``DynamicCache`` for a language model's ``config`` (hybrid layers get their own entries)."""
    return _cache_types()[1](config=config)


def is_dynamic_cache(cache) -> bool:
    """True for the growing per-layer cache the engine supports (not static / quantized / offloaded)."""
    return type(cache) is _cache_types()[1]


def generate_cache_kwargs(model, cache) -> dict:
    """``{keyword: cache}`` for ``model.generate`` to continue ``cache`` (the keyword of this release:
    ``cache`` from 5.24, ``past_key_values`` before)."""
    return {cache_keyword(model): cache}


#: a linear-attention cache layer's count of the tokens it has seen (5.24+; 5.20 has none)
LINEAR_SEEN = "cumulative_length_linear"


def counts_linear_tokens(cache, layer: int) -> bool:
    """True when linear-attention layer ``layer`` of ``cache`` counts the tokens it has seen (5.24+), so
    ``cache_length`` can be asked of it."""
    return hasattr(cache.layers[layer], LINEAR_SEEN)


def copy_cache(cache):
    """A deep copy of a KV cache (every layer's keys / values, a linear layer's conv / recurrent states):
    the copy can be extended without touching the original (a reused prefix stays immutable)."""
    import copy

    return copy.deepcopy(cache)


def cache_tensors(cache) -> dict:
    """Every tensor a DynamicCache holds, by a stable name: ``{i}.keys`` / ``{i}.values`` for a softmax
    layer (b, H_kv, S_i, d), ``{i}.conv`` / ``{i}.recurrent`` for a linear-attention layer (its state at the
    last token) and, from 5.24, ``{i}.length`` (a 0-d int64: the tokens it has seen, :data:`LINEAR_SEEN`, what
    ``cache.get_seq_length(i)`` answers and ``generate`` reads as the past length when layer 0 is linear).
    The cache's bytes, and its content on disk (:func:`cache_from_tensors` rebuilds it, every layer's
    attributes equal to the original's)."""
    out = {}
    for i, entry in enumerate(cache.layers):
        if hasattr(entry, "recurrent_states"):
            out[f"{i}.conv"] = entry.conv_states[0]
            out[f"{i}.recurrent"] = entry.recurrent_states[0]
            if hasattr(entry, LINEAR_SEEN):  # 5.24+: the layer counts the tokens it has seen
                out[f"{i}.length"] = getattr(entry, LINEAR_SEEN)
        else:
            out[f"{i}.keys"] = entry.keys
            out[f"{i}.values"] = entry.values
    return out


def cache_from_tensors(config, tensors: dict) -> object:
    """A DynamicCache for ``config`` holding ``tensors`` (as :func:`cache_tensors` named them); ValueError
    when they do not fill exactly the cache's layers with the layer kinds it expects."""
    cache = new_dynamic_cache(config)
    used = set()
    for i, entry in enumerate(cache.layers):
        if hasattr(entry, "recurrent_states"):
            counts = hasattr(entry, LINEAR_SEEN)
            conv, rec, seen = (tensors.get(f"{i}.{name}") for name in ("conv", "recurrent", "length"))
            if conv is None or rec is None or (counts and (seen is None or seen.numel() != 1)):
                raise ValueError(f"layer {i}: no linear-attention state")
            entry.update_conv_state(conv)  # a prefill's update: sets has_previous_state, counts conv's width
            entry.update_recurrent_state(rec)
            used |= {f"{i}.conv", f"{i}.recurrent"}
            if counts:
                getattr(entry, LINEAR_SEEN).copy_(seen.reshape(()))  # the tokens the layer really saw
                used.add(f"{i}.length")
        else:
            keys, values = tensors.get(f"{i}.keys"), tensors.get(f"{i}.values")
            if keys is None or values is None:
                raise ValueError(f"layer {i}: no keys / values")
            entry.update(keys, values)
            used |= {f"{i}.keys", f"{i}.values"}
    if used != set(tensors):
        raise ValueError(f"tensors for layers this model does not have: {sorted(set(tensors) - used)[:3]}")
    return cache


# ---- position state (M-RoPE) ------------------------------------------------------------------
#: the model attribute where Qwen-VL families keep the M-RoPE offset of the last prefill, which generate
#: reads to place tokens that continue a cache
ROPE_DELTAS = "rope_deltas"


def position_state(model) -> dict:
    """The position state a prefill left on ``model`` that continuing its cache needs: ``{"rope_deltas":
    (b, 1)}`` for M-RoPE families, {} for others."""
    inner = getattr(model, "model", None)
    value = getattr(inner, ROPE_DELTAS, None)
    return {} if value is None else {ROPE_DELTAS: value.clone()}


def restore_position_state(model, state: dict) -> None:
    """Put back a :func:`position_state` before continuing the cache it came with."""
    if ROPE_DELTAS in state:
        setattr(model.model, ROPE_DELTAS, state[ROPE_DELTAS].clone())


# ---- decoder-layer calls -------------------------------------------------------------------
def layer_hidden(args: tuple, kwargs: dict):
    """The hidden states a decoder layer was called with, (b, S, D)."""
    return args[0] if args else kwargs[HIDDEN]


def with_layer_hidden(args: tuple, kwargs: dict, hidden) -> tuple[tuple, dict]:
    """(args, kwargs) with the hidden states replaced, in whichever slot they came."""
    if args:
        return (hidden, *args[1:]), kwargs
    kwargs[HIDDEN] = hidden
    return args, kwargs


def cache_keyword(module) -> str:
    """The keyword under which ``module.forward`` (a decoder layer, or the model) takes the KV cache in this
    release."""
    import inspect

    params = inspect.signature(module.forward).parameters
    for name in CACHE_KWARGS:
        if name in params:
            return name
    raise RuntimeError(f"{type(module).__name__}.forward takes no known cache keyword; {version_note()}")


def layer_output_hidden(output):
    """The hidden states a decoder layer returned (a tensor, or the first item of a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def layer_rope(kwargs: dict, layer: int):
    """The (cos, sin) rotary embeddings a decoder layer received; a clear error if the name moved."""
    rope = kwargs.get(ROPE)
    if rope is None:
        raise RuntimeError(
            f"decoder layer {layer} received no {ROPE!r}: the engine cannot place survivors; {version_note()}"
        )
    return rope


# ---- rotary helpers the adapters use -------------------------------------------------------
def qwen2_vl_text_rotary():
    """Qwen2-VL's ``apply_rotary_pos_emb(q, k, cos, sin)`` (M-RoPE sections already folded into cos / sin)."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb

    return apply_rotary_pos_emb


def qwen2_vl_vision_rotary():
    """Qwen2-VL's vision ``apply_rotary_pos_emb_vision(q, k, cos, sin)``, q / k (n, H, d)."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

    return apply_rotary_pos_emb_vision


def qwen2_5_vl_text_rotary():
    """Qwen2.5-VL's ``apply_rotary_pos_emb(q, k, cos, sin)`` (M-RoPE sections already folded into cos / sin)."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

    return apply_rotary_pos_emb


def qwen2_5_vl_vision_rotary():
    """Qwen2.5-VL's vision ``apply_rotary_pos_emb_vision(q, k, cos, sin)``, q / k (n, H, d)."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    return apply_rotary_pos_emb_vision


def qwen3_vl_text_rotary():
    """Qwen3-VL's ``apply_rotary_pos_emb(q, k, cos, sin)`` (interleaved M-RoPE already folded into cos / sin)."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb

    return apply_rotary_pos_emb


def qwen3_vl_vision_rotary():
    """Qwen3-VL's vision ``apply_rotary_pos_emb_vision(q, k, cos, sin)``, q / k (n, H, d)."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb_vision

    return apply_rotary_pos_emb_vision


def qwen2_text_rotary():
    """Qwen2's ``apply_rotary_pos_emb(q, k, cos, sin)`` (the LLM of LLaVA-OneVision)."""
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    return apply_rotary_pos_emb


def llava_onevision_num_patches():
    """LLaVA-OneVision's ``image_size_to_num_patches(image_size, grid_pinpoints, patch_size)``."""
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    return image_size_to_num_patches


# ---- vision-encoder hook points ------------------------------------------------------------
def qwen_vision_grid(args: tuple, kwargs: dict):
    """``grid_thw`` (n_inputs, 3) of a Qwen-VL vision-encoder call (keyword or 2nd positional)."""
    return kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]


# ---- vision-encoder calls, rewritten by encoder reuse (pruning.encoder_reuse) -------------------
#: (position, keyword) of a Qwen-VL vision-encoder call's patch rows (n_patches, C*T*P*P) and grid (n_inputs, 3)
QWEN_VISION_PIXELS = (0, "hidden_states")
QWEN_VISION_GRID = (1, "grid_thw")
#: (position, keyword) of a SigLIP vision-tower call's frames / crops (B, C, H, W) (LLaVA-OneVision)
SIGLIP_PIXELS = (0, "pixel_values")
#: the call keyword asking an encoder for attention maps (they span a call's whole packed sequence)
OUTPUT_ATTENTIONS = "output_attentions"


def call_input(args: tuple, kwargs: dict, slot: tuple[int, str]):
    """The value of input ``slot`` = (position, keyword) of a module call, wherever it came."""
    position, name = slot
    return args[position] if len(args) > position else kwargs[name]


def call_with(args: tuple, kwargs: dict, slot: tuple[int, str], value) -> tuple[tuple, dict]:
    """(args, kwargs) of a module call with input ``slot`` replaced by ``value``, in the slot it came in."""
    position, name = slot
    if len(args) > position:
        return (*args[:position], value, *args[position + 1:]), kwargs
    return args, {**kwargs, name: value}


def other_tensor_inputs(args: tuple, kwargs: dict, slots: tuple) -> list[str]:
    """Names (or positions) of a call's tensor inputs besides ``slots``: transformers accepts precomputed
    geometry for a vision encoder as keywords (``cu_seqlens``, ``position_ids``, ``max_seqlen``,
    ``window_index`` / ``cu_window_seqlens``, interpolation indices and weights, ...), sized for the
    whole call — a call shrunk to its distinct patches must not carry them. Attention maps asked for
    (``output_attentions``) count too (a Qwen encoder's span its whole packed sequence: no rows to spread)."""
    import torch

    positions = {p for p, _ in slots}
    names = {n for _, n in slots}
    out = [f"argument {i}" for i, a in enumerate(args) if i not in positions and isinstance(a, torch.Tensor)]
    out += [k for k, v in kwargs.items() if k not in names and isinstance(v, torch.Tensor)]
    if kwargs.get(OUTPUT_ATTENTIONS):
        out.append(OUTPUT_ATTENTIONS)
    return out


def qwen_vision_attn_inputs(kwargs: dict):
    """((cos, sin), cu_seqlens) a Qwen-VL vision attention block receives."""
    return kwargs[ROPE], kwargs["cu_seqlens"]


def qwen_vision_window_index(visual, args: tuple, kwargs: dict):
    """Qwen2.5-VL: ``window_index`` (n_tokens,) of a vision-encoder call — the permutation, at merge-unit
    (= LLM token) granularity, that the encoder applies before its blocks (window order); the merger's
    output is put back with ``argsort(window_index)``. Taken from the call's precomputed keyword when
    given, else computed with transformers' own ``get_vision_window_index`` from ``grid_thw`` and the
    encoder's ``spatial_merge_size`` / ``window_size`` / ``patch_size``."""
    if kwargs.get("window_index") is not None and kwargs.get("cu_window_seqlens") is not None:
        return kwargs["window_index"]
    from transformers.vision_utils import get_vision_window_index

    index, _ = get_vision_window_index(
        qwen_vision_grid(args, kwargs),
        spatial_merge_size=visual.spatial_merge_size,
        window_size=visual.window_size,
        patch_size=visual.patch_size,
    )
    return index


# ---- DeepStack (Qwen3-VL): per-layer visual additions inside the language model ---------------
#: keywords of the Qwen3-VL language-model forward that carry DeepStack: a (b, S) bool mask of the visual
#: positions and a list (one per early decoder layer) of (n_visual, D) rows added after that layer
VISUAL_POS_MASKS = "visual_pos_masks"
DEEPSTACK_EMBEDS = "deepstack_visual_embeds"


def take_deepstack(kwargs: dict):
    """Remove DeepStack from a Qwen3-VL language-model call's ``kwargs``; returns (mask (b, S) bool or None,
    [rows (n_visual, D)] or None). With the embeds set to None the model's layer loop skips its own
    DeepStack step. A clear error if the model took them under another name (a rename)."""
    if DEEPSTACK_EMBEDS not in kwargs and VISUAL_POS_MASKS not in kwargs:
        raise RuntimeError(
            f"the language model received neither {DEEPSTACK_EMBEDS!r} nor {VISUAL_POS_MASKS!r}: DeepStack moved "
            f"and the engine cannot carry it to the survivors; {version_note()}"
        )
    embeds, mask = kwargs.get(DEEPSTACK_EMBEDS), kwargs.get(VISUAL_POS_MASKS)
    kwargs[DEEPSTACK_EMBEDS] = None
    kwargs[VISUAL_POS_MASKS] = None
    return mask, embeds


# ---- a language model run layer by layer (the "never present" reference, pruning.oracles) -------
def lm_parts(model, language_model):
    """(rotary embedding module, final norm, lm_head) of a loaded model: what a reference that runs the
    decoder layers one by one needs besides them (``language_model.rotary_emb`` / ``.norm``,
    ``model.lm_head``)."""
    return language_model.rotary_emb, language_model.norm, model.lm_head


def attn_implementation(model) -> str:
    """The attention kernel a loaded model runs ("sdpa", "eager", "flash_attention_2", ...)."""
    return model.config._attn_implementation


def rotary_position_ids(position_ids):
    """The position ids a language model hands its rotary embedding: Qwen3-VL / Qwen3.5 pass 4 rows (the text
    row first, used for masks only, then t / h / w) and rotate with the last three."""
    if position_ids.ndim == 3 and position_ids.shape[0] == 4:
        return position_ids[1:]
    return position_ids


# ---- hybrid models (Qwen3.5): linear-attention layers beside softmax attention ---------------------
#: ``config.layer_types`` values of decoder layers whose token mixer is softmax attention with a KV cache
FULL_ATTENTION = "full_attention"
#: ... and of layers with a recurrent linear-attention mixer (Gated DeltaNet): no keys, no per-token cache
LINEAR_ATTENTION = "linear_attention"


def layer_types(config) -> list[str]:
    """Each decoder layer's type from the text config's ``layer_types`` (all ``full_attention`` when the
    config has none, i.e. a dense model). An unknown type raises: the engine would not know how to cut it."""
    cfg = config.get_text_config()
    types = getattr(cfg, "layer_types", None) or [FULL_ATTENTION] * cfg.num_hidden_layers
    unknown = sorted(set(types) - {FULL_ATTENTION, LINEAR_ATTENTION})
    if unknown:
        raise NotImplementedError(f"decoder layer types {unknown} are not supported by the pruning engine")
    if len(types) != cfg.num_hidden_layers:
        raise RuntimeError(f"config.layer_types has {len(types)} entries for {cfg.num_hidden_layers} layers")
    return list(types)


def linear_mixer(decoder_layer):
    """The linear-attention token mixer of a hybrid decoder layer (Qwen3.5: ``linear_attn``)."""
    mixer = getattr(decoder_layer, "linear_attn", None)
    if mixer is None:
        raise RuntimeError(f"a linear-attention decoder layer has no 'linear_attn' module; {version_note()}")
    return mixer


def mixer_hidden(args: tuple, kwargs: dict):
    """The hidden states a token mixer (linear attention) was called with, (b, S, D)."""
    return args[0] if args else kwargs[HIDDEN]


def linear_state_shapes(cache, layer: int) -> tuple[tuple, tuple]:
    """(conv state shape, recurrent state shape) a linear-attention layer left in ``cache`` after a forward:
    (b, conv_dim, kernel) and (b, value heads, key dim, value dim) — fixed sizes, whatever the tokens."""
    entry = cache.layers[layer]
    conv, recurrent = entry.conv_states[0], entry.recurrent_states[0]
    if conv is None or recurrent is None:
        raise RuntimeError(f"linear-attention layer {layer} holds no conv / recurrent state after the prefill")
    return tuple(conv.shape), tuple(recurrent.shape)


def qwen3_5_text_rotary():
    """Qwen3.5's ``apply_rotary_pos_emb(q, k, cos, sin)`` (partial: rotates the first ``cos.shape[-1]`` dims;
    interleaved M-RoPE folded into cos / sin). qwen3_5_moe's modeling file has the same function."""
    from transformers.models.qwen3_5.modeling_qwen3_5 import apply_rotary_pos_emb

    return apply_rotary_pos_emb


def qwen3_5_vision_rotary():
    """Qwen3.5's vision ``apply_rotary_pos_emb_vision(q, k, cos, sin)``, q / k (n, H, d)."""
    from transformers.models.qwen3_5.modeling_qwen3_5 import apply_rotary_pos_emb_vision

    return apply_rotary_pos_emb_vision


# ---- processor inputs ----------------------------------------------------------------------
def video_metadata(total_frames: int, fps: float | None, indices: list[int]):
    """transformers' ``VideoMetadata`` for frames sampled elsewhere: the source's frame count and fps and
    the indices of the sampled frames (Qwen2.5-VL derives ``second_per_grid_ts`` from it, Qwen3-VL the
    ``<t seconds>`` timestamps of its prompt)."""
    from transformers.video_utils import VideoMetadata

    return VideoMetadata(total_num_frames=int(total_frames), fps=fps, frames_indices=list(indices))


def video_frame_size(video_processor, frames: int, height: int, width: int, videos_kwargs: dict) -> tuple[int, int]:
    """(height, width) the family's video processor resizes ``frames`` frames of ``height`` x ``width`` to, under
    ``videos_kwargs`` (the kwargs a real call gets), computed by the processor's own code on a ``meta``-device
    clip: no pixels, no work (Qwen: smart resize with patch x merge factor, min / max pixels, the per-frame cap
    that depends on the frame count; LLaVA-OneVision: its fixed size). Read off the output: Qwen's
    ``video_grid_thw`` (in patches), else the shape of ``pixel_values_videos``."""
    import torch

    kwargs = {k: v for k, v in videos_kwargs.items() if k != "video_metadata"}  # metadata is not about size
    clip = torch.empty((frames, height, width, 3), dtype=torch.uint8, device="meta")
    out = video_processor(videos=[clip], return_tensors="pt", **kwargs)
    if "video_grid_thw" in out:
        _, grid_h, grid_w = (int(v) for v in out["video_grid_thw"][0].tolist())
        return grid_h * video_processor.patch_size, grid_w * video_processor.patch_size
    h, w = out["pixel_values_videos"].shape[-2:]
    return int(h), int(w)


def resize_video_frames(video_processor, frames, size: tuple[int, int]):
    """``frames`` (t, H, W, 3) uint8 resized to ``size`` = (h, w) by the resize the family's video processor runs
    on a whole clip (transformers' torchvision backend, the processor's own resample), frame by frame; the result
    is (t, h, w, 3) uint8. Per-frame, so resizing a clip chunk by chunk gives exactly the frames the processor
    would make of the whole clip, and the processor's own resize of frames already at ``size`` is the identity
    (both checked by the ``--resize exact`` oracle in tests/test_ingest.py)."""
    from transformers.image_processing_backends import TorchvisionBackend
    from transformers.image_utils import SizeDict

    resized = TorchvisionBackend.resize(
        video_processor, image=frames.permute(0, 3, 1, 2), size=SizeDict(height=size[0], width=size[1]),
        resample=video_processor.resample,
    )
    return resized.permute(0, 2, 3, 1)


def video_patch_writer(video_processor, videos_kwargs: dict):
    """A cheaper route to the rows a Qwen-style video processor makes of frames already at its size, or
    ``None`` where the processor is not one (LLaVA-OneVision) or ``videos_kwargs`` turn off its rescale or
    normalisation: then the caller runs the processor itself.

    The processor (transformers' ``_preprocess``, resize off) converts a ``(t, H, W, 3)`` uint8 clip to
    channels-first, casts it to float32, normalises it in place with its fused rescale / mean / std
    (``_fuse_mean_std_and_rescale_factor``) and cuts it into rows with its ``patchify`` (a permutation plus the
    last frame repeated to a whole temporal patch), then concatenates the clips; a caller filling one
    ``pixel_values`` copies once more: five copies of every chunk. The writer runs the same
    functions in another order: ``patchify`` on the uint8 frames (a view, one copy), the cast straight into
    the caller's rows, then the same in-place ``normalize`` with the same fused mean / std. Every step is
    elementwise or a permutation, so the rows are bit-identical to the processor's; the caller still checks
    that on the clip's first temporal patch (:class:`vitcop_cli.session.ingest.ChunkPreprocessor`), so a
    release that changes the processor fails loudly instead of feeding the model other pixels.

    ``write(frames, out) -> rows``: ``frames`` (t, H, W, 3) uint8 (t a multiple of the temporal patch but for
    the clip's last chunk); ``out`` (>= rows, C * temporal_patch * patch * patch) float32, the rows to fill from
    the first; returns how many it filled (t / temporal_patch * H / patch * W / patch, rounded up in t)."""
    import torch

    needed = ("patchify", "normalize", "_fuse_mean_std_and_rescale_factor", "patch_size", "merge_size",
              "temporal_patch_size", "image_mean", "image_std", "rescale_factor")
    if not all(hasattr(video_processor, name) for name in needed):
        return None
    settings = {name: videos_kwargs.get(name, getattr(video_processor, name, None))
                for name in ("do_rescale", "do_normalize", "rescale_factor", "image_mean", "image_std",
                             "patch_size", "merge_size", "temporal_patch_size")}
    if not (settings["do_rescale"] and settings["do_normalize"]):
        return None
    mean, std = (tuple(v) if isinstance(v, list) else v for v in (settings["image_mean"], settings["image_std"]))
    mean, std, rescale_left = video_processor._fuse_mean_std_and_rescale_factor(  # lru_cached: hashable arguments
        do_normalize=True, image_mean=mean, image_std=std, do_rescale=True, rescale_factor=settings["rescale_factor"],
        device=torch.device("cpu"),
    )
    if rescale_left:
        return None
    patch = settings["patch_size"]

    def write(frames, out) -> int:
        patches, *_ = video_processor.patchify(
            frames.permute(0, 3, 1, 2).unsqueeze(0), patch_size=patch, merge_size=settings["merge_size"],
            temporal_patch_size=settings["temporal_patch_size"],
        )
        rows = patches.shape[1]
        target = out[:rows].view(rows, frames.shape[-1], -1, patch)  # channels third from the end, as normalize wants
        target.copy_(patches[0].view(target.shape))
        video_processor.normalize(target, mean.to(target.device), std.to(target.device), inplace=True)
        return rows

    return write
