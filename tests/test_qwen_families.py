"""Family-specific oracles of the Qwen2.5-VL and Qwen3-VL adapters (issue 9), on the tiny models.

The family-generic oracles (identity, drop == mask, cache lengths, positions, decode, ask == generate,
baselines, run-time checks) run for these families through ``FAMILIES``; this file adds:

- Qwen2.5-VL: the Stage-I saliency (and VIC features) of every token equal a brute-force computation in
  the *original* patch order — windows re-derived here from the grid, one explicit softmax per attention
  unit — both for the released layout (the last block attends over full frames) and for a last block
  that attends within windows.
- Qwen3-VL DeepStack: with tokens dropped at the entry or at a layer inside the DeepStack range, the
  hidden states after layer ``len(deepstack) - 1`` (DeepStack included) equal an unpruned run that masks
  the same tokens — every survivor received exactly its own DeepStack features; with merging, every
  surviving token carries the row of the token at its position (a merged token: its anchor's row); the
  adapter refuses DeepStack rows that are not aligned with the prunable visual tokens.
- Qwen3-VL-MoE (not in ``FAMILIES``, to keep CI short): the same adapter; identity and drop == mask
  under sdpa and eager, every stage pruned in ``ask``, FLOPs from the active experts' MLP width, and the
  ``evs`` method (per-layer KV lengths equal its budget; drop == mask).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pruning
from pruning import compat
from pruning.oracles import KeyMask, dropped_before
from pruning.presets import Preset
from vitcop_cli.media.video import load_visual

STAGE1_ONLY = Preset(name="stage1-only", ratio=1.0, vision_keep=0.5, cluster_fraction=0.18, deep_divisor=1.0)


@pytest.fixture(scope="module")
def prepared(sessions, clip):
    return {f: sessions[f].prepare(load_visual(clip, frames=4), "What happens?") for f in ("qwen2_5_vl", "qwen3_vl")}


# ---- Qwen2.5-VL: Stage I in the original patch order ---------------------------------------------
def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _windows(grid_thw, merge: int, window_tokens: int):
    """(window order of the tokens, window id per token in original order), derived from the grid alone:
    token (t, r, c) lies in window (t, r // w, c // w); windows run t-major then row-major, tokens
    row-major inside a window."""
    order, window_of = [], []
    base, wid = 0, 0
    for t, h, w in grid_thw.tolist():
        hh, ww = h // merge, w // merge
        ids = torch.arange(t * hh * ww).reshape(t, hh, ww) + base
        for f in range(t):
            for r0 in range(0, hh, window_tokens):
                for c0 in range(0, ww, window_tokens):
                    cell = ids[f, r0:r0 + window_tokens, c0:c0 + window_tokens].flatten()
                    order.append(cell)
                    window_of.append(torch.full((cell.numel(),), wid))
                    wid += 1
        base += t * hh * ww
    order = torch.cat(order)
    unit = torch.empty_like(order)
    unit[order] = torch.cat(window_of)
    return order, unit


@pytest.mark.parametrize("last_block", ["full", "windowed"])
def test_qwen2_5_vl_stage1_saliency_equals_brute_force_in_original_order(sessions, prepared, last_block, monkeypatch):
    session, inputs = sessions["qwen2_5_vl"], prepared["qwen2_5_vl"].inputs
    visual = session.model.model.visual
    block = visual.blocks[-1]
    if last_block == "windowed":
        monkeypatch.setattr(visual, "fullatt_block_indexes", [])
    assert (len(visual.blocks) - 1 in visual.fullatt_block_indexes) == (last_block == "full")
    assert any(i not in visual.fullatt_block_indexes for i in range(len(visual.blocks)))  # a windowed block exists
    grid = inputs["video_grid_thw"]
    merge = visual.spatial_merge_size
    window_order, window_of = _windows(grid, merge, visual.window_size // merge // visual.patch_size)
    assert torch.equal(window_order, compat.qwen_vision_window_index(visual, (), {"grid_thw": grid}))

    seen = {}

    def grab(_m, args, kwargs):
        seen["x"], seen["rope"], seen["cu"] = args[0], kwargs["position_embeddings"], kwargs["cu_seqlens"]

    records: list = []
    hooks = [block.attn.register_forward_pre_hook(grab, with_kwargs=True)]
    hooks += session.adapter.attach_encoder_capture(records)
    try:
        with torch.inference_mode():
            visual(inputs["pixel_values_videos"], grid_thw=grid)
    finally:
        for h in hooks:
            h.remove()

    # the block's inputs, put back into the original patch order (window order is per 2x2 merge unit)
    group = merge * merge
    restore = torch.argsort(window_order)
    to_orig = lambda x: x.reshape(-1, group, *x.shape[1:])[restore].reshape(x.shape)  # noqa: E731
    x, cos, sin = to_orig(seen["x"]), to_orig(seen["rope"][0]), to_orig(seen["rope"][1])
    n = x.shape[0]
    heads = block.attn.num_heads
    q, k, _ = block.attn.qkv(x).reshape(n, 3, heads, -1).unbind(1)  # (n, H, d), original order
    qr = q * cos[:, None] + _rotate_half(q) * sin[:, None]
    kr = k * cos[:, None] + _rotate_half(k) * sin[:, None]

    t, h, w = grid[0].tolist()
    frame_of = torch.arange(t).repeat_interleave(h * w // group)  # per token, original order
    unit_of = frame_of if last_block == "full" else window_of
    sizes = torch.bincount(unit_of).tolist()
    assert seen["cu"].diff().tolist() == [s * group for s in (sizes if last_block == "full" else
                                                               torch.bincount(window_of[window_order]).tolist())]
    patch_unit = unit_of.repeat_interleave(group)
    scores = torch.zeros(n)
    for u in range(len(sizes)):
        idx = (patch_unit == u).nonzero().flatten()
        qbar = qr[idx].mean(0)  # (H, d)
        logits = torch.einsum("hd,nhd->hn", qbar, kr[idx]) * block.attn.scaling
        scores[idx] = torch.softmax(logits, dim=-1).sum(0)
    expected = scores.reshape(-1, group).sum(1)

    (record,) = records
    torch.testing.assert_close(record.payload["saliency"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(record.payload["features"], k.reshape(n // group, -1).reshape(n // group, group, -1)
                               .mean(1), atol=1e-6, rtol=1e-6)
    assert torch.equal(record.payload["frame_ids"], frame_of)
    # the window order really differs from the original one here, so a missing restore would fail
    assert not torch.equal(window_order, torch.arange(window_order.numel()))


# ---- Qwen3-VL: DeepStack carried to the survivors -----------------------------------------------
def _hidden_entering(model, adapter, layer: int, inputs, setup):
    """Hidden states entering decoder layer ``layer`` (= after layer-1, DeepStack included) of one prefill
    run under ``setup()`` (a context manager or handle with remove), plus the handle."""
    got = {}

    def grab(_m, args, kwargs):
        got["h"] = compat.layer_hidden(args, kwargs).clone()

    ctx = setup()
    hook = adapter.decoder_layers[layer].register_forward_pre_hook(grab, with_kwargs=True)  # after the engine's
    try:
        with torch.inference_mode():
            model(**inputs, use_cache=True)
    finally:
        hook.remove()
        ctx.remove()
    return got["h"], ctx


@pytest.mark.parametrize("how", ["entry", "layer"])
def test_qwen3_vl_survivors_receive_exactly_their_own_deepstack_features(sessions, prepared, how, monkeypatch):
    session, inputs = sessions["qwen3_vl"], prepared["qwen3_vl"].inputs
    model, adapter = session.model, session.adapter
    n_deep = len(model.config.vision_config.deepstack_visual_indexes)
    after = n_deep - 1  # the last layer DeepStack adds to
    preset, method = (STAGE1_ONLY, "vitcop") if how == "entry" else ("1_9", "fastv")

    def attached():
        handle = pruning.attach(model, preset, method)
        handle.bind(inputs)
        return handle

    pruned, handle = _hidden_entering(model, adapter, after + 1, inputs, attached)
    state = handle.last
    start = 0 if how == "entry" else handle.method.k
    assert start <= after  # the cut happens where DeepStack still adds features
    dropped = dropped_before(adapter, inputs["input_ids"], state, start)
    assert dropped.numel() > 0
    reference, _ = _hidden_entering(model, adapter, after + 1, inputs,
                                    lambda: KeyMask(model, adapter, dropped, start))
    where = state.kept_orig[state.cached(after + 1)]
    assert pruned.shape[1] == where.numel() < reference.shape[1]
    torch.testing.assert_close(pruned[0], reference[0, where], atol=1e-5, rtol=1e-5)

    # the check can fail: survivors given their neighbours' rows differ from the reference
    real = type(adapter).take_layer_additions  # the engine makes its own adapter instance: patch the class
    monkeypatch.setattr(type(adapter), "take_layer_additions",
                        lambda self, kw, *a, **k: {i: r.roll(1, 0) for i, r in real(self, kw, *a, **k).items()})
    shifted, _ = _hidden_entering(model, adapter, after + 1, inputs, attached)
    assert not torch.allclose(shifted[0], reference[0, where], atol=1e-3)


def test_qwen3_vl_every_survivor_carries_the_row_of_its_position(sessions, prepared, monkeypatch):
    """With merging at Ls (inside the DeepStack range) and the deep cut: each visual token left carries, for
    every DeepStack layer, the row of the prompt token at its position — a merged token its anchor's."""
    session, inputs = sessions["qwen3_vl"], prepared["qwen3_vl"].inputs
    adapter = session.adapter
    taken = {}
    real = type(adapter).take_layer_additions

    def spy(self, kwargs, *a, **k):
        taken["mask"] = kwargs[compat.VISUAL_POS_MASKS][0].clone()
        taken["rows"] = real(self, kwargs, *a, **k)
        return taken["rows"]

    monkeypatch.setattr(type(adapter), "take_layer_additions", spy)
    with pruning.attach(session.model, "1_3") as handle, torch.inference_mode():
        handle.bind(inputs)
        session.model(**inputs, use_cache=True)
    state = handle.last
    ls = handle.method.shallow
    assert ls < len(taken["rows"]) and state.stages[1][1] < state.stages[0][1]  # merged inside the range
    visual_positions = taken["mask"].nonzero().flatten()
    survivors = state.kept_orig[state.cur[state.visual]]
    rank = torch.searchsorted(visual_positions, survivors)
    assert torch.equal(visual_positions[rank], survivors)
    assert set(state.additions) == set(taken["rows"])
    for layer, rows in taken["rows"].items():
        assert torch.equal(state.additions[layer], rows[rank])


def test_qwen3_vl_deepstack_is_taken_over_only_when_aligned(sessions):
    adapter = sessions["qwen3_vl"].adapter
    mask = torch.tensor([[False, True, True, False, True]])
    rows = [torch.randn(3, 4), torch.randn(3, 4)]
    kwargs = {compat.VISUAL_POS_MASKS: mask, compat.DEEPSTACK_EMBEDS: rows, "inputs_embeds": torch.zeros(1, 5, 4)}
    out = adapter.take_layer_additions(kwargs, torch.tensor([1, 2, 4]))
    assert kwargs[compat.DEEPSTACK_EMBEDS] is None and kwargs[compat.VISUAL_POS_MASKS] is None
    assert set(out) == {0, 1} and torch.equal(out[1], rows[1])
    with pytest.raises(RuntimeError, match="not the prunable visual tokens"):
        adapter.take_layer_additions({compat.VISUAL_POS_MASKS: mask, compat.DEEPSTACK_EMBEDS: rows},
                                     torch.tensor([0, 2, 4]))
    with pytest.raises(RuntimeError, match="3 rows for 2 visual tokens"):
        adapter.take_layer_additions({compat.VISUAL_POS_MASKS: torch.tensor([[True, True, False]]),
                                      compat.DEEPSTACK_EMBEDS: rows})
    with pytest.raises(RuntimeError, match="DeepStack moved"):
        adapter.take_layer_additions({"inputs_embeds": torch.zeros(1, 5, 4)})
    assert adapter.take_layer_additions({compat.VISUAL_POS_MASKS: None, compat.DEEPSTACK_EMBEDS: None}) is None


def test_qwen3_vl_identity_keeps_the_models_own_deepstack(sessions, prepared):
    session, inputs = sessions["qwen3_vl"], prepared["qwen3_vl"].inputs
    seen = []
    hook = session.adapter.language_model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw.get(compat.DEEPSTACK_EMBEDS)), with_kwargs=True
    )
    try:
        with pruning.attach(session.model, "none"), torch.inference_mode():
            session.model(**inputs, use_cache=True)
    finally:
        hook.remove()
    assert seen and seen[0] is not None and len(seen[0]) == 3


def test_qwen_video_prompts_carry_the_real_frame_times(sessions, clip):
    """Qwen3-VL writes each temporal patch's time into the prompt and Qwen2.5-VL scales temporal positions
    by seconds per patch: both from the source fps and the sampled frame indices, not a default fps."""
    visual = load_visual(clip, frames=4)
    fps = visual.source_fps
    p3 = sessions["qwen3_vl"].prepare(visual, "What happens?")
    text = sessions["qwen3_vl"].processor.tokenizer.decode(p3.inputs["input_ids"][0])
    i = visual.indices
    times = [(i[0] + i[1]) / 2 / fps, (i[2] + i[3]) / 2 / fps]
    assert all(f"<{t:.1f} seconds>" in text for t in times), text[:300]
    p25 = sessions["qwen2_5_vl"].prepare(visual, "What happens?")
    sampled_fps = len(i) / visual.total_frames * fps
    assert p25.inputs["second_per_grid_ts"].tolist() == pytest.approx([2 / sampled_fps])


# ---- the MoE variants: Qwen3-VL-MoE (the Qwen3-VL adapter, unchanged), Qwen3.5-MoE (the Qwen3.5 adapter) --
@pytest.fixture(scope="module", params=["qwen3_vl_moe", "qwen3_5_moe"])
def moe(tmp_path_factory, clip, request):
    """A tiny MoE checkpoint (8 experts, 2 active), loaded under sdpa and eager, with a clip."""
    import os

    from vitcop_cli import api
    from vitcop_cli.models.devmodels import make_model

    base = os.environ.get("VITCOP_TEST_MODELS")
    folder = (Path(base) if base else tmp_path_factory.mktemp("moe")) / f"{request.param}-tiny"
    if not (folder / "config.json").exists():
        make_model(request.param, folder)
    out = {}
    for attn in ("sdpa", "eager"):
        session = api.load(str(folder), device="cpu", attn=attn, offline=True)
        out[attn] = (session, session.prepare(load_visual(clip, frames=4), "What happens?").inputs)
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_qwen3_vl_moe_identity_and_drop_equals_mask(moe, attn):
    from tests.test_oracles import DEEP_ONLY, _greedy, _prefill_logits, assert_matches_masked_reference

    session, inputs = moe[attn]
    assert session.model_type in ("qwen3_vl_moe", "qwen3_5_moe")
    shape = session.adapter.lm_shape()
    cfg = session.model.config.get_text_config()
    shared = getattr(cfg, "shared_expert_intermediate_size", 0) or 0  # Qwen3.5-MoE: plus the shared expert
    assert shape.intermediate == cfg.num_experts_per_tok * cfg.moe_intermediate_size + shared  # active MLP width
    model = session.model
    ref = _prefill_logits(model, inputs)
    with pruning.attach(model, "none"):
        assert torch.equal(_prefill_logits(model, inputs), ref)
    for preset, start in ((STAGE1_ONLY, 0), (DEEP_ONLY, None)):
        with pruning.attach(model, preset) as handle:
            handle.bind(inputs)
            tokens, scores = _greedy(model, inputs)
            state = handle.last
        start = handle.method.deep if start is None else start
        assert_matches_masked_reference(session, inputs, state, start, tokens, scores)
    assert torch.equal(_prefill_logits(model, inputs), ref)


def test_qwen3_vl_moe_evs_budget_and_drop_equals_mask(moe):
    """``evs`` on the MoE model: every layer caches S - N + max(P, floor(N * r)) tokens at 1_9 and the
    pruned greedy run equals the unpruned run with the dropped tokens' keys masked from layer 0."""
    import math

    from pruning.presets import load_preset
    from tests.test_evs_methods import _layout
    from tests.test_oracles import _greedy, assert_matches_masked_reference, layer_lengths

    session, inputs = moe["sdpa"]
    n, per_patch, _ = _layout(session, inputs)
    budget = max(per_patch, math.floor(n * load_preset("1_9").ratio + 1e-9))
    assert budget < n  # the clip really is pruned (here the first temporal patch is the floor: P > N * r)
    expected = [inputs["input_ids"].shape[1] - n + budget] * session.adapter.lm_shape().layers
    with pruning.attach(session.model, "1_9", "evs") as handle:
        handle.bind(inputs)
        with torch.inference_mode():
            cache = compat.output_cache(session.model(**inputs, use_cache=True))
        assert layer_lengths(handle, cache, handle.last) == expected
        handle.bind(inputs)  # each prefill consumes the bound extras (video_grid_thw)
        tokens, scores = _greedy(session.model, inputs)
        state = handle.last
    assert state.stages == [(0, budget)]
    assert_matches_masked_reference(session, inputs, state, 0, tokens, scores)


def test_qwen3_vl_moe_ask_prunes_every_stage(moe, clip):
    session, _ = moe["sdpa"]
    p = session.ask(clip, "What happens?", preset="1_9", frames=4, max_new_tokens=3).pruning
    assert p.n_visual > p.after_stage1 > p.after_stage2 > p.after_stage3 >= 1 and p.flops_ratio < 1


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_max_pixels_bounds_each_video_frame(sessions, clip, family):
    """``--max-pixels`` is per frame for every Qwen family (Qwen3-VL's video processor reads its size as a
    bound on the whole clip; the adapter converts)."""
    session = sessions[family]
    patch = session.model.config.vision_config.patch_size
    visual = load_visual(clip, frames=4)
    cells = []
    for bound in (patch * patch * 64, patch * patch * 160):
        _, h, w = session.prepare(visual, "What happens?", max_pixels=bound).inputs["video_grid_thw"][0].tolist()
        assert h * w * patch * patch <= bound
        cells.append(h * w)
    assert cells[0] < cells[1] and cells[1] * patch * patch > 0.5 * patch * patch * 160  # not shrunk far below
