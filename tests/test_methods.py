"""Baseline methods through the shared engine: budgets (KV lengths), identity, drop == mask.

Each baseline takes the preset's layer-averaged ratio r: ``uniform`` / ``divprune`` keep
R = round(r*N) before the LLM; ``fastv`` keeps all N up to layer K and R after, with
K*N + (L-K)*R = L*r*N.
"""

from __future__ import annotations

import pytest
import torch

import pruning
from pruning import compat
from pruning.baselines import evenly_spaced, single_cut_budget
from pruning.presets import load_preset
from tests.test_oracles import _greedy, assert_matches_masked_reference, layer_lengths
from vitcop_cli import api
from vitcop_cli.models.devmodels import FAMILIES
from vitcop_cli.media.video import load_visual

BASELINES = ("fastv", "divprune", "uniform")


@pytest.fixture(scope="module")
def runs(sessions, clip):
    return {f: (s, s.prepare(load_visual(clip, frames=4), "What happens?").inputs) for f, s in sessions.items()}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", BASELINES)
@pytest.mark.parametrize("name", ["1_3", "1_9"])
def test_kv_lengths_follow_the_method_budget(runs, family, method, name):
    session, inputs = runs[family]
    preset = load_preset(name)
    layers = session.adapter.lm_shape().layers
    n_visual = int(session.adapter.visual_mask(inputs["input_ids"]).sum())
    if family == "llava_onevision":
        n_visual -= 1  # the video's trailing image-newline token is structural
    non_visual = inputs["input_ids"].shape[1] - n_visual
    with pruning.attach(session.model, preset, method) as handle, torch.inference_mode():
        cache = compat.output_cache(session.model(**inputs, use_cache=True))
        report = handle.report(inputs["input_ids"])
    lengths = layer_lengths(handle, cache, handle.last)
    if method == "fastv":
        k = handle.method.k  # the preset's shallow layer (snapped on a hybrid model)
        assert k == preset.shallow_layer or session.adapter.lm_shape().layer_types
        r = single_cut_budget(n_visual, layers, preset.ratio, cut_layer=k)
        expected = [non_visual + (n_visual if i < k else r) for i in range(layers)]
    else:
        r = single_cut_budget(n_visual, layers, preset.ratio, cut_layer=0)
        expected = [non_visual + r] * layers
    assert lengths == expected
    assert report.method == method and report.n_visual == n_visual and report.after_stage3 == r
    assert report.kv_cache_lengths == lengths


@pytest.mark.parametrize("method", BASELINES)
def test_none_preset_is_identity_for_every_method(runs, method):
    session, inputs = runs["qwen2_vl"]
    ref_tokens, ref_scores = _greedy(session.model, inputs)
    with pruning.attach(session.model, "none", method) as handle:
        assert len(handle._hooks) == 2  # observers only
        tokens, scores = _greedy(session.model, inputs)
    assert torch.equal(tokens, ref_tokens) and torch.equal(scores, ref_scores)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", BASELINES)
def test_dropping_equals_masking(runs, family, method):
    session, inputs = runs[family]
    model = session.model
    with pruning.attach(model, "1_9", method) as handle:
        tokens, scores = _greedy(model, inputs)
        state = handle.last
    start = handle.method.prune_layers[0] if handle.method.prune_layers else 0
    assert_matches_masked_reference(session, inputs, state, start, tokens, scores)


def test_uniform_keeps_evenly_spaced_visual_tokens(runs):
    session, inputs = runs["qwen2_vl"]
    with pruning.attach(session.model, "1_9", "uniform") as handle, torch.inference_mode():
        session.model(**inputs, use_cache=True)
        state = handle.last
    visual = session.adapter.visual_mask(inputs["input_ids"])[0].nonzero().flatten()
    kept_visual = [i for i in state.kept_orig.tolist() if i in set(visual.tolist())]
    expected = visual[evenly_spaced(visual.numel(), len(kept_visual))].tolist()
    assert kept_visual == expected


def test_fastv_keeps_the_most_attended_tokens(runs):
    """Independent check: recompute layer K-1's attention of the last token from an unpruned run."""
    session, inputs = runs["qwen2_vl"]
    model, ad = session.model, session.adapter
    k = load_preset("1_9").shallow_layer
    grabbed = {}
    eager = api.load(str(session.name), device="cpu", attn="eager", offline=True)  # weights: same files
    def grab(_module, _args, output):
        grabbed.setdefault("w", output[1])  # (1, H, S, S) attention weights (eager)

    hooks = [eager.adapter.decoder_layers[k - 1].self_attn.register_forward_hook(grab)]
    try:
        with torch.inference_mode():
            eager.model(**inputs, use_cache=True, output_attentions=True)
    finally:
        for h in hooks:
            h.remove()
    attn = grabbed["w"][0, :, -1].float().mean(0)  # (S,) mean over heads of the last query's row
    visual = ad.visual_mask(inputs["input_ids"])[0].nonzero().flatten()
    with pruning.attach(model, "1_9", "fastv") as handle, torch.inference_mode():
        model(**inputs, use_cache=True)
        state = handle.last
    kept = sorted(set(state.kept_orig[state.cached(k)].tolist()) & set(visual.tolist()))
    expected = visual[torch.sort(attn[visual], descending=True, stable=True).indices[: len(kept)]].sort().values
    assert kept == expected.tolist()


def test_the_ratio_warning_gives_each_method_its_own_reason(sessions, clip):
    """EVS at 1_9 on 4 frames (2 temporal patches) cannot go below 0.5: the warning blames the first
    temporal patch, not the model's depth; a clamped budget of another method names the depth."""
    session = sessions["qwen2_vl"]
    evs = session.ask(clip, "What happens?", preset="1_9", method="evs", frames=4, max_new_tokens=1)
    shortfall = [w for w in evs.warnings if "layer-averaged ratio" in w]
    assert len(shortfall) == 1 and "first temporal patch" in shortfall[0] and "layer model" not in shortfall[0]
    layers = session.adapter.lm_shape().layers
    assert pruning.methods.method_class("fastv").shortfall_reason(layers) == (
        f"its budget clamps on this clip / {layers}-layer model")
