"""Qwen3.5 (hybrid Gated DeltaNet / softmax attention): snapping, FLOPs by layer kind, run-time checks.

The oracles themselves (identity, dropped == never present, KV-cache lengths, positions) run on Qwen3.5 as
on every family (``FAMILIES``); this file covers what only a hybrid model has, and shows each new guard firing.
"""

from __future__ import annotations

import pytest
import torch

import pruning
from pruning import compat
from pruning.budget import snap_cut_layer
from pruning.flops import LinearAttention, decoder_prefill_flops, layer_flops, linear_layer_flops
from pruning.presets import PresetError, load_preset
from pruning.verify import PruningNotApplied
from vitcop_cli.media.video import load_visual

LIN, FULL = "linear_attention", "full_attention"
RELEASED = [LIN, LIN, LIN, FULL] * 8  # 32 layers, full attention at 3, 7, ..., 31


# ---- snapping (pure) ---------------------------------------------------------------------
def test_snap_moves_a_cut_until_the_previous_layer_has_keys():
    keys = [t == FULL for t in [LIN, LIN, LIN, FULL] * 3]  # keys at 3, 7, 11
    assert snap_cut_layer(2, keys, 1, 10) == 4
    assert snap_cut_layer(8, keys, 5, 11) == 8  # already fits
    assert snap_cut_layer(6, keys, 1, 11) == 4  # tie between 4 and 8: the shallower
    assert snap_cut_layer(9, keys, 5, 11) == 8
    assert snap_cut_layer(2, keys, 5, 7) is None  # no key layer before any candidate in range
    assert snap_cut_layer(3, [True] * 6, 1, 5) == 3  # a dense model: unchanged


def test_presets_snap_on_hybrid_models_and_keep_the_ratio():
    for name, ratio in (("1_3", 1 / 3), ("2_9", 2 / 9), ("1_9", 1 / 9)):
        b = load_preset(name).budgets(4096, 32, layer_types=RELEASED)
        assert (b.shallow_layer, b.deep_layer) == (4, 20)  # Ls 2 -> 4, Ld 22 -> 20 (tie -> shallower)
        assert RELEASED[b.shallow_layer - 1] == RELEASED[b.deep_layer - 1] == FULL
        assert b.ratio_to_N == pytest.approx(ratio, rel=2e-3)
    dense = load_preset("1_9").budgets(4096, 32)
    assert (dense.shallow_layer, dense.deep_layer) == (2, 22)


def test_a_hybrid_model_with_one_usable_full_layer_is_refused_clearly():
    types = [LIN, LIN, LIN, FULL, LIN, LIN, LIN, FULL]  # keys at 3 and 7: only Ls = 4 fits below L - 1
    with pytest.raises(PresetError, match="full attention only at layer"):
        load_preset("1_9").resolve_layers(8, types)


def test_unknown_layer_types_are_refused():
    class Cfg:
        num_hidden_layers = 2
        layer_types = [FULL, "sliding_attention"]

        def get_text_config(self):
            return self

    with pytest.raises(NotImplementedError, match="sliding_attention"):
        compat.layer_types(Cfg())


# ---- FLOPs by layer kind (pure) ------------------------------------------------------------
LA = LinearAttention(key_heads=1, value_heads=2, key_dim=2, value_dim=3, conv_kernel=4, chunk=2)


def test_linear_layer_flops_by_hand():
    n, h, m = 3, 5, 7
    proj = 2 * n * h * (2 * 1 * 2 + 2 * 2 * 3 + 2 * 2) + 2 * n * 2 * 3 * h
    conv = 2 * n * (2 * 1 * 2 + 2 * 3) * 4
    chunks = 2  # ceil(3 / 2)
    per_chunk = 3 * 2 * 4 * 2 + 2 * 2 * 4 * 3 + 2 * 8 / 3 + 3 * 2 * 2 * 2 * 3
    mlp = 3 * 2 * n * h * m
    assert linear_layer_flops(n, hidden=h, linear=LA, intermediate=m) == pytest.approx(
        proj + conv + 2 * chunks * per_chunk + mlp
    )


def test_decoder_flops_count_each_layer_by_its_kind():
    shape = dict(hidden=5, n_heads=2, n_kv_heads=1, head_dim=3, intermediate=7)
    got = decoder_prefill_flops([3, 4], **shape, layer_types=[LIN, FULL], linear=LA, query_gate=True)
    want = linear_layer_flops(3, hidden=5, linear=LA, intermediate=7) + layer_flops(4, **shape, query_gate=True)
    assert got == pytest.approx(want)
    assert layer_flops(4, **shape, query_gate=True) - layer_flops(4, **shape) == 2 * 4 * 5 * 2 * 3
    with pytest.raises(ValueError, match="LinearAttention"):
        decoder_prefill_flops([3], **shape, layer_types=[LIN])


# ---- the engine on the tiny Qwen3.5 --------------------------------------------------------
@pytest.fixture(scope="module")
def hybrid(sessions, clip):
    session = sessions["qwen3_5"]
    return session, session.prepare(load_visual(clip, frames=4), "What happens in the video?").inputs


def _prefill(session, inputs, preset="1_9"):
    with pruning.attach(session.model, load_preset(preset)) as handle, torch.inference_mode():
        handle.bind(inputs)
        session.model(**inputs, use_cache=True)
        return handle


def test_the_report_counts_tokens_per_layer_and_snapped_layers(hybrid):
    session, inputs = hybrid
    handle = _prefill(session, inputs)
    rep = handle.report(inputs["input_ids"])
    assert (rep.shallow_layer, rep.deep_layer) == (4, 8)
    assert rep.n_visual > rep.after_stage1 > rep.after_stage2 > rep.after_stage3 >= 1
    lens = rep.kv_cache_lengths
    assert lens[:4] == [lens[0]] * 4 and lens[4:8] == [lens[4]] * 4 and lens[8:] == [lens[8]] * 4
    assert lens[0] - lens[4] == rep.after_stage1 - rep.after_stage2
    assert lens[4] - lens[8] == rep.after_stage2 - rep.after_stage3
    assert 0 < rep.flops_ratio < 1


def test_a_linear_mixer_out_of_sight_fails_loudly(hybrid, monkeypatch):
    """A renamed ``linear_attn`` whose hook then never fires: the prefill is refused, not reported."""
    session, inputs = hybrid
    monkeypatch.setattr(compat, "linear_mixer", lambda layer: torch.nn.Identity())
    with pytest.raises(PruningNotApplied, match="linear-attention mixer of layer 0 did not run"):
        _prefill(session, inputs)


def test_a_linear_layer_that_processed_other_tokens_fails_loudly(hybrid, monkeypatch):
    session, inputs = hybrid
    real = compat.mixer_hidden
    monkeypatch.setattr(compat, "mixer_hidden", lambda args, kwargs: real(args, kwargs)[:, :-1])
    with pytest.raises(PruningNotApplied, match=r"linear-attention layer 0 processed \d+ tokens, expected"):
        _prefill(session, inputs)


def test_changed_linear_state_shapes_fail_loudly(hybrid, monkeypatch):
    session, inputs = hybrid
    monkeypatch.setattr(compat, "linear_state_shapes", lambda cache, layer: ((1, 1, 1), (1, 1, 1, 1)))
    with pytest.raises(PruningNotApplied, match="holds states of shapes"):
        _prefill(session, inputs)


def test_fastv_cuts_after_a_full_attention_layer(hybrid):
    session, inputs = hybrid
    handle = pruning.attach(session.model, load_preset("1_9"), method="fastv")
    try:
        assert handle.method.prune_layers == (4,)  # K = 2 snapped: layer 3 is the first with keys
        handle.bind(inputs)
        with torch.inference_mode():
            session.model(**inputs, use_cache=True)
        rep = handle.report(inputs["input_ids"])
        assert rep.after_stage2 < rep.n_visual
    finally:
        handle.remove()


def test_presets_command_shows_the_snapped_layers_and_the_rule():
    from typer.testing import CliRunner

    from vitcop_cli.app import app

    result = CliRunner().invoke(app, ["presets", "--model", "tiny:qwen3_5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "@ 4" in result.output and "@ 8" in result.output and "@ 2 " not in result.output
    assert "full attention only at layers 3, 7, 11" in result.output and "snapped" in result.output


def test_a_preset_that_cannot_snap_is_refused_before_anything_runs(hybrid, monkeypatch):
    from vitcop_cli.batch import runner
    from vitcop_cli.errors import InputError

    session, _ = hybrid
    runner.check_presets_fit(session, [load_preset("1_9")])  # the real layout: cuts snap to 4 and 8
    monkeypatch.setattr(runner, "_layout", lambda s: (12, [LIN] * 11 + [FULL]))  # one full layer, the last
    with pytest.raises(InputError, match=r"does not fit this model.*full attention only at layer\(s\) \[11\]"):
        runner.check_presets_fit(session, [load_preset("1_9")])
    assert session.check_preset("1_9").name == "1_9"  # the session checks with its own layer types
