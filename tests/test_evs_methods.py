"""``evs`` through the shared engine on every family: budget (KV lengths), the tokens it keeps, drop ==
mask, identity at q = 0, image prompts untouched, and the adapters' video token layout."""

from __future__ import annotations

import math

import pytest
import torch

import pruning
from pruning.evs import evs_select
from pruning.presets import load_preset
from tests import test_methods
from tests.test_oracles import _greedy, _prefill_logits, assert_matches_masked_reference, layer_lengths
from vitcop_cli.models.devmodels import FAMILIES
from vitcop_cli.media.video import load_visual

runs = test_methods.runs  # the baselines' fixture: {family: (session, inputs of a 4-frame clip)}


def _layout(session, inputs):
    """(N, tokens per temporal patch, video token positions) read off the processor's outputs alone."""
    video = (inputs["input_ids"][0] == session.adapter.visual_token_ids()["video"]).nonzero().flatten()
    if "video_grid_thw" in inputs:  # the Qwen-VL families
        t, h, w = inputs["video_grid_thw"][0].tolist()
        per_patch = h * w // 4  # 2x2 spatial merge
    else:
        video = video[:-1]  # the trailing image-newline token is structural
        t = inputs["pixel_values_videos"].shape[1]
        per_patch = video.numel() // t
    assert t * per_patch == video.numel()
    return video.numel(), per_patch, video


def _unpruned_embeds(session, inputs):
    """inputs_embeds the language model receives without pruning, (1, S, D)."""
    got = {}

    def grab(_module, _args, kwargs):
        got.setdefault("e", kwargs["inputs_embeds"].clone())

    hook = session.adapter.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.inference_mode():
            session.model(**inputs, use_cache=True)
    finally:
        hook.remove()
    return got["e"]


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_video_token_grids(runs, family):
    session, inputs = runs[family]
    n, per_patch, _ = _layout(session, inputs)
    (t, h, w), = session.adapter.video_token_grids(inputs["input_ids"], inputs)
    assert (t * h * w, h * w) == (n, per_patch)
    if "video_grid_thw" in inputs:  # the Qwen-VL families
        _, gh, gw = inputs["video_grid_thw"][0].tolist()
        assert (h, w) == (gh // 2, gw // 2)
    else:
        assert t == inputs["pixel_values_videos"].shape[1] and h == w


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ["1_3", "2_9", "1_9"])
def test_kv_lengths_equal_the_evs_budget(runs, family, name):
    session, inputs = runs[family]
    r = load_preset(name).ratio
    n, per_patch, _ = _layout(session, inputs)
    budget = max(per_patch, math.floor(n * r + 1e-9))  # q = 1 - r: keep max(P, floor(N * (1 - q)))
    non_visual = inputs["input_ids"].shape[1] - n
    layers = session.adapter.lm_shape().layers
    with pruning.attach(session.model, name, "evs") as handle, torch.inference_mode():
        handle.bind(inputs)
        cache = session.model(**inputs, use_cache=True).past_key_values
        report = handle.report(inputs["input_ids"])
    assert layer_lengths(handle, cache, handle.last) == [non_visual + budget] * layers
    assert report.method == "evs" and report.n_visual == n and report.after_stage3 == budget
    assert report.layer_averaged_visual == budget


@pytest.mark.parametrize("family", FAMILIES)
def test_keeps_the_first_patch_and_the_most_changed_tokens(runs, family):
    session, inputs = runs[family]
    n, per_patch, video = _layout(session, inputs)
    embeds = _unpruned_embeds(session, inputs)[0, video]
    expected = video[evs_select(embeds, per_patch, 1 - load_preset("1_9").ratio)]
    with pruning.attach(session.model, "1_9", "evs") as handle, torch.inference_mode():
        handle.bind(inputs)
        session.model(**inputs, use_cache=True)
        state = handle.last
    kept = sorted(set(state.kept_orig.tolist()) & set(video.tolist()))
    assert kept == expected.tolist()
    assert set(video[:per_patch].tolist()) <= set(kept)
    assert len(kept) < n


@pytest.mark.parametrize("family", FAMILIES)
def test_dropping_equals_masking(runs, family):
    session, inputs = runs[family]
    with pruning.attach(session.model, "1_9", "evs") as handle:
        handle.bind(inputs)
        tokens, scores = _greedy(session.model, inputs)
        state = handle.last
    assert_matches_masked_reference(session, inputs, state, 0, tokens, scores)


@pytest.mark.parametrize("family", FAMILIES)
def test_q_zero_is_identity(runs, family):
    session, inputs = runs[family]
    ref_tokens, ref_scores = _greedy(session.model, inputs)
    with pruning.attach(session.model, "none", "evs") as handle:  # r = 1 -> q = 0
        assert handle.method.is_identity and len(handle._hooks) == 2  # observers only
        tokens, scores = _greedy(session.model, inputs)
    assert torch.equal(tokens, ref_tokens) and torch.equal(scores, ref_scores)


@pytest.mark.parametrize("family", FAMILIES)
def test_image_prompt_is_untouched(sessions, family, image):
    session = sessions[family]
    inputs = session.prepare(load_visual(image), "What is shown?").inputs
    ref = _prefill_logits(session.model, inputs)
    with pruning.attach(session.model, "1_9", "evs") as handle:
        handle.bind(inputs)
        got = _prefill_logits(session.model, inputs)
        report = handle.report(inputs["input_ids"])
    assert report.n_visual > 0 and report.after_stage3 == report.n_visual and report.flops_ratio == 1.0
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_a_missing_video_grid_names_the_family_and_the_fix(sessions, clip, family):
    """Without ``video_grid_thw`` (``generate`` does not pass it to every family's forward), the layout
    error says which model and that ``handle.bind(inputs)`` supplies it."""
    session = sessions[family]
    inputs = session.prepare(load_visual(clip, frames=4), "What happens?").inputs
    with pytest.raises(RuntimeError, match=rf"the {family} video token layout .*handle\.bind\(inputs\)"):
        session.adapter.video_token_grids(inputs["input_ids"], {})
