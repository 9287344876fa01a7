"""Oracle tests of the pruning engine on tiny random models (both families, sdpa and eager).

1. ``none`` / attach-then-remove: bit-identical logits and greedy tokens to the unmodified model, on a
   video and on an image prompt.
2. Dropping tokens at layer L equals an unpruned run that masks those keys from layer L on
   (deep stage alone at L = Ld; Stage I alone at L = 0), logits within 1e-4, same greedy tokens.
   On a hybrid model (Qwen3.5: linear-attention layers, where a key mask means nothing) the same
   runs are checked against "never present" instead (:class:`pruning.oracles.NeverPresent`).
3. Per-layer KV-cache lengths after prefill equal the budgets ``stage_budgets`` computes.
4. Layers >= Ls see exactly the rotary embeddings of the survivors' original positions, and decode
   steps get the same position ids with and without pruning.
"""

from __future__ import annotations

import pytest
import torch

from pruning import compat

import pruning
from pruning.oracles import KeyMask, NeverPresent, dropped_before
from pruning.budget import stage_budgets
from pruning.presets import Preset, load_preset
from vitcop_cli import api
from vitcop_cli.models.devmodels import FAMILIES
from vitcop_cli.media.video import load_visual

ATTNS = ("sdpa", "eager")
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def loaded(tiny_models):
    """{(family, attn): Session} — each tiny model under each attention implementation."""
    api.quiet_library_logs()
    return {
        (family, attn): api.load(str(path), device="cpu", attn=attn, offline=True)
        for family, path in tiny_models.items()
        for attn in ATTNS
    }


@pytest.fixture(scope="module")
def prepared(loaded, clip):
    return {
        key: session.prepare(load_visual(clip, frames=4), "What happens in the video?")
        for key, session in loaded.items()
    }


@pytest.fixture(scope="module")
def prepared_image(loaded, image):
    return {key: session.prepare(load_visual(image), "What is shown?") for key, session in loaded.items()}


def _greedy(model, inputs, **kw):
    out = model.generate(
        **inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True, return_dict_in_generate=True, **kw
    )
    return out.sequences[0, inputs["input_ids"].shape[1]:], torch.stack(out.logits)


def _prefill_logits(model, inputs):
    with torch.inference_mode():
        return model(**inputs, use_cache=True).logits[0, -1]


KEYS = [(f, a) for f in FAMILIES for a in ATTNS]


# ---- 1. identity ------------------------------------------------------------------------
@pytest.mark.parametrize("key", KEYS, ids=lambda k: "-".join(k))
@pytest.mark.parametrize("media", ["video", "image"])
def test_none_and_attach_remove_are_bit_identical(loaded, prepared, prepared_image, key, media):
    model = loaded[key].model
    inputs = (prepared if media == "video" else prepared_image)[key].inputs
    assert ("pixel_values_videos" in inputs) == (media == "video")  # the media really is what the id says
    ref_logits = _prefill_logits(model, inputs)
    ref_tokens, ref_scores = _greedy(model, inputs)
    hooks_before = _hook_ids(model)  # after a first run: transformers installs its own capture hooks lazily
    with pruning.attach(model, "none") as handle:
        assert len(handle._hooks) == 2  # identity preset: only the two observers (they return nothing)
        assert torch.equal(_prefill_logits(model, inputs), ref_logits)
        tokens, scores = _greedy(model, inputs)
    assert torch.equal(tokens, ref_tokens) and torch.equal(scores, ref_scores)
    handle = pruning.attach(model, "1_9")
    pruned = _prefill_logits(model, inputs)
    handle.remove()
    assert not torch.equal(pruned, ref_logits)  # pruning really changed something while attached
    assert torch.equal(_prefill_logits(model, inputs), ref_logits)
    tokens, scores = _greedy(model, inputs)
    assert torch.equal(tokens, ref_tokens) and torch.equal(scores, ref_scores)
    assert _hook_ids(model) == hooks_before


def _hook_ids(model) -> set:
    return {(name, kind, hid) for name, m in model.named_modules()
            for kind, hooks in (("pre", m._forward_pre_hooks), ("post", m._forward_hooks)) for hid in hooks}


# ---- 2. drop == mask --------------------------------------------------------------------
DEEP_ONLY = Preset(name="deep-only", ratio=1.0, vision_keep=1.0, cluster_fraction=0.18, deep_divisor=5.0)
STAGE1_ONLY = Preset(name="stage1-only", ratio=1.0, vision_keep=0.5, cluster_fraction=0.18, deep_divisor=1.0)


@pytest.mark.parametrize("key", KEYS, ids=lambda k: "-".join(k))
@pytest.mark.parametrize("preset", [DEEP_ONLY, STAGE1_ONLY], ids=lambda p: p.name)
def test_dropping_equals_masking(loaded, prepared, key, preset):
    session, inputs = loaded[key], prepared[key].inputs
    model = session.model
    with pruning.attach(model, preset) as handle:
        handle.bind(inputs)
        tokens, scores = _greedy(model, inputs)
        state = handle.last
    shape = session.adapter.lm_shape()
    budget_layers = preset.budgets(state.n_visual, shape.layers, layer_types=shape.layer_types or None)
    (_, v), (_, rs), (_, rd) = state.stages
    if preset is DEEP_ONLY:
        assert v == rs == state.n_visual > rd
    else:
        assert v < state.n_visual and rd == rs == v
    start = budget_layers.deep_layer if preset is DEEP_ONLY else 0
    assert_matches_masked_reference(session, inputs, state, start, tokens, scores)


def assert_matches_masked_reference(session, inputs, state, start: int, tokens, scores) -> None:
    """The pruned run's greedy tokens / logits equal an unpruned run that masks, from layer
    ``start`` on, the keys of every visual token that layer ``start`` no longer saw.

    On a hybrid model (linear-attention layers: no key mask) the reference is "dropped == never
    present" instead: the model's own layers run on exactly the survivors of every layer."""
    if session.adapter.lm_shape().layer_types:
        ref_tokens, ref_scores = NeverPresent(session.model, session.adapter, inputs, state).run(tokens.numel())
        assert torch.equal(tokens, ref_tokens)
        torch.testing.assert_close(scores[:, 0].float(), ref_scores, atol=1e-5, rtol=0)
        return
    dropped = dropped_before(session.adapter, inputs["input_ids"], state, start)
    assert dropped.numel() > 0
    reference = KeyMask(session.model, session.adapter, dropped, start)
    try:
        ref_tokens, ref_scores = _greedy(session.model, inputs)
    finally:
        reference.remove()
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(scores, ref_scores, atol=1e-4, rtol=0)


# ---- 3. cache lengths --------------------------------------------------------------------
def _expected_budget(session, inputs, preset: Preset):
    """N, per-frame V and the spec's (V, Rs, Rd) computed from the prompt alone."""
    input_ids = inputs["input_ids"]
    n_placeholders = int(session.adapter.visual_mask(input_ids).sum())
    # the adapter's own token layout: one video of t frames (Stage-I units) x h x w prunable tokens;
    # placeholders beyond it are structural (LLaVA's trailing image-newline token)
    ((frames, h, w),) = session.adapter.video_token_grids(input_ids, inputs)
    n, per_frame = frames * h * w, h * w
    assert n_placeholders - 1 <= n <= n_placeholders
    v = frames * max(1, int(preset.vision_keep * per_frame + 1e-9))
    shape = session.adapter.lm_shape()
    layers = shape.layers
    ls, ld = preset.resolve_layers(layers, shape.layer_types or None)
    V, Rs, Rd = stage_budgets(n, layers, preset.ratio, preset.vision_keep, ls, ld, preset.deep_divisor, n_after_stage1=v)
    return input_ids.shape[1] - n, V, Rs, Rd, ls, ld


@pytest.mark.parametrize("key", KEYS, ids=lambda k: "-".join(k))
@pytest.mark.parametrize("name", ["1_3", "2_9", "1_9"])
def test_kv_cache_lengths_match_budgets(loaded, prepared, key, name):
    session, inputs = loaded[key], prepared[key].inputs
    preset = load_preset(name)
    non_visual, V, Rs, Rd, ls, ld = _expected_budget(session, inputs, preset)
    with pruning.attach(session.model, preset) as handle, torch.inference_mode():
        cache = compat.output_cache(session.model(**inputs, use_cache=True))
        state = handle.last
    lengths = layer_lengths(handle, cache, state)
    expected = [non_visual + (V if layer < ls else Rs if layer < ld else Rd) for layer in range(len(lengths))]
    assert lengths == expected


def layer_lengths(handle, cache, state) -> list[int]:
    """Tokens each decoder layer holds after a prefill: its KV-cache length, or for a linear-attention
    layer (which caches no tokens) what its mixer processed, as the engine recorded it."""
    return [cache.layers[layer].keys.shape[-2] if handle.shape.has_keys(layer) else state.mixed[layer]
            for layer in range(handle.shape.layers)]


# ---- 4. positions ------------------------------------------------------------------------
def _reference_rope(session, inputs):
    """cos/sin the unpruned model hands to every layer (captured from an unpruned forward)."""
    captured = {}

    def grab(_m, _a, kwargs):
        captured["rope"] = kwargs["position_embeddings"]

    h = session.adapter.decoder_layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.inference_mode():
            session.model(**inputs, use_cache=True)
    finally:
        h.remove()
    return captured["rope"]


@pytest.mark.parametrize("key", KEYS, ids=lambda k: "-".join(k))
def test_layers_see_original_positions_of_survivors(loaded, prepared, key):
    session, inputs = loaded[key], prepared[key].inputs
    full_cos, full_sin = _reference_rope(session, inputs)
    seen: dict[int, tuple] = {}
    hooks = []
    for layer, module in enumerate(session.adapter.decoder_layers):
        def grab(_m, _a, kwargs, layer=layer):
            seen.setdefault(layer, kwargs["position_embeddings"])
        if hasattr(module, "self_attn"):  # linear-attention layers take no positions
            hooks.append(module.self_attn.register_forward_pre_hook(grab, with_kwargs=True))
    try:
        with pruning.attach(session.model, "1_3") as handle, torch.inference_mode():
            session.model(**inputs, use_cache=True)
            state = handle.last
    finally:
        for h in hooks:
            h.remove()
    for layer, (cos, sin) in seen.items():
        orig = state.kept_orig[state.cached(layer)]
        assert torch.equal(cos, full_cos[:, orig]) and torch.equal(sin, full_sin[:, orig]), layer
    # merged tokens sit at their anchor's position: every survivor of layer Ls was present before it
    ls = handle.method.shallow
    assert set(state.cached(ls).tolist()) <= set(state.cached(ls - 1).tolist())
    first, after = min(seen), min(layer for layer in seen if layer >= ls)
    assert len(seen[after][0][0]) < len(seen[first][0][0])


@pytest.mark.parametrize("key", KEYS, ids=lambda k: "-".join(k))
def test_decode_positions_match_unpruned(loaded, prepared, key):
    session, inputs = loaded[key], prepared[key].inputs
    lm = session.adapter.language_model

    def run(preset):
        got = []
        h = lm.register_forward_pre_hook(lambda _m, _a, kw: got.append(kw["position_ids"].clone()), with_kwargs=True)
        try:
            with pruning.attach(session.model, preset) as handle:
                handle.bind(inputs)
                session.model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        finally:
            h.remove()
        return got

    plain, pruned = run("none"), run("1_9")
    assert len(plain) == len(pruned) == NEW_TOKENS
    for a, b in zip(plain[1:], pruned[1:]):
        assert torch.equal(a, b)


# ---- misc --------------------------------------------------------------------------------
def test_batch_larger_than_one_fails_clearly(loaded, prepared):
    session, inputs = loaded[("qwen2_vl", "sdpa")], prepared[("qwen2_vl", "sdpa")].inputs
    doubled = {k: torch.cat([v, v]) if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v
               for k, v in inputs.items()}
    doubled["pixel_values_videos"] = torch.cat([inputs["pixel_values_videos"]] * 2)
    doubled["video_grid_thw"] = torch.cat([inputs["video_grid_thw"]] * 2)
    with pruning.attach(session.model, "1_3"), pytest.raises(NotImplementedError, match="batch size 1"):
        session.model(**doubled)


def test_text_only_prompt_passes_through(loaded):
    session = loaded[("qwen2_vl", "sdpa")]
    ids = session.processor.tokenizer("hello there", return_tensors="pt")
    with torch.inference_mode():
        ref = session.model(**ids).logits
        with pruning.attach(session.model, "1_9"):
            got = session.model(**ids).logits
    assert torch.equal(ref, got)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("media", ["clip", "image"])
def test_ask_prunes_video_and_image(sessions, family, media, clip, image):
    path = clip if media == "clip" else image
    result = sessions[family].ask(path, "What is shown?", preset="1_9", frames=4 if media == "clip" else None,
                                  max_new_tokens=3)
    p = result.pruning
    assert p.n_visual > p.after_stage1 > p.after_stage2 > p.after_stage3 >= 1  # V < N, Rs < V, Rd < Rs (issue 7)
    assert p.flops_ratio < 1 and p.layer_averaged_ratio < 1
    assert result.tokens.generated >= 1
