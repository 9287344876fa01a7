"""Oracle "dropped == never present", on every family (Qwen3.5's linear-attention layers included).

A pruned prefill + greedy decode must give the same logits and tokens as :class:`pruning.oracles.NeverPresent`:
the model's own decoder layers run one by one with the hidden states, rotary embeddings and DeepStack rows
gathered to the survivors at each cut (what each layer kept is read from the engine's record; merged values
a cut wrote are taken as given). For a hybrid model this is the oracle where a key mask means nothing: a
Gated DeltaNet layer's recurrent state after the prefill must be exactly what the survivors alone produce.
Exact under eager, within 1e-5 under SDPA. A sabotaged cut (one survivor's row swapped for a dropped
token's) must make it fail.
"""

from __future__ import annotations

import pytest
import torch

import pruning
from pruning import survivors
from pruning.oracles import NeverPresent
from pruning.presets import load_preset
from vitcop_cli import api
from vitcop_cli.models.devmodels import FAMILIES
from vitcop_cli.media.video import load_visual

ATTNS = ("sdpa", "eager")
NEW_TOKENS = 5
KEYS = [(f, a) for f in FAMILIES for a in ATTNS]


@pytest.fixture(scope="module")
def loaded(tiny_models):
    api.quiet_library_logs()
    return {
        (family, attn): api.load(str(tiny_models[family]), device="cpu", attn=attn, offline=True)
        for family, attn in KEYS
    }


@pytest.fixture(scope="module")
def prepared(loaded, clip):
    return {key: s.prepare(load_visual(clip, frames=4), "What happens in the video?").inputs for key, s in loaded.items()}


def pruned_run(session, inputs, preset="1_9"):
    """(greedy tokens (T,), logits (T, vocab), the engine's record) of a pruned generate."""
    with pruning.attach(session.model, load_preset(preset)) as handle:
        handle.bind(inputs)
        out = session.model.generate(
            **inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
        state = handle.last
    return out.sequences[0, inputs["input_ids"].shape[1]:], torch.stack(out.logits)[:, 0].float(), state


def assert_never_present(session, inputs, tokens, logits, state, attn: str) -> None:
    ref_tokens, ref_logits = NeverPresent(session.model, session.adapter, inputs, state).run(NEW_TOKENS)
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(logits, ref_logits, atol=0 if attn == "eager" else 1e-5, rtol=0)


@pytest.mark.parametrize("key", KEYS, ids=lambda k: "-".join(k))
def test_pruned_run_equals_survivors_only_reference(loaded, prepared, key):
    session, inputs = loaded[key], prepared[key]
    tokens, logits, state = pruned_run(session, inputs)
    counts = [n for _, n in state.stages]
    assert state.n_visual > counts[0] > counts[1] > counts[2] >= 1  # all three stages cut
    assert state.written, "the shallow cut merged nothing: the oracle would not see merged values"
    assert_never_present(session, inputs, tokens, logits, state, key[1])


@pytest.mark.parametrize("attn", ATTNS)
def test_a_sabotaged_cut_is_caught(loaded, prepared, monkeypatch, attn):
    """The pruned run keeps one wrong token at the deep cut while its record says otherwise: the hybrid
    model's later layers (linear ones included) then see other inputs than the reference, and it fails."""
    key = ("qwen3_5", attn)
    session, inputs = loaded[key], prepared[key]
    shrink = survivors.shrink

    def sabotaged(state, hidden, choice):
        visual_in = state.visual.nonzero().flatten().to(hidden.device)
        dropped = visual_in[~torch.isin(torch.arange(visual_in.numel()), choice.keep.cpu())]
        out = shrink(state, hidden, choice)
        if choice.values is None and dropped.numel():  # the deep cut: a plain drop
            out[0, state.visual_idx[0]] = hidden[0, dropped[0]]
        return out

    monkeypatch.setattr(survivors, "shrink", sabotaged)
    tokens, logits, state = pruned_run(session, inputs)
    with pytest.raises(AssertionError):
        assert_never_present(session, inputs, tokens, logits, state, attn)


def test_linear_layers_processed_only_the_survivors(loaded, prepared):
    """The run-time record of a hybrid prefill: each Gated DeltaNet mixer saw exactly the planned tokens."""
    session, inputs = loaded[("qwen3_5", "sdpa")], prepared[("qwen3_5", "sdpa")]
    _, _, state = pruned_run(session, inputs)
    types = session.adapter.lm_shape().types()
    linear = [layer for layer, t in enumerate(types) if t == "linear_attention"]
    assert linear and set(state.mixed) == set(linear)
    assert all(state.mixed[layer] == state.cached(layer).numel() for layer in linear)
    assert len({state.mixed[layer] for layer in linear}) == 3  # before Ls, between Ls and Ld, after Ld


@pytest.mark.parametrize("family", FAMILIES)
def test_the_sdpa_causal_path_gives_the_same_reference(loaded, prepared, family):
    """``additive_mask=False`` (no mask to the prefill's softmax layers, SDPA's own causality: the kernel path
    a real unpadded run takes, which ``benchmarks/ttft_breakdown.py`` times) is still the same reference."""
    session, inputs = loaded[(family, "sdpa")], prepared[(family, "sdpa")]
    tokens, logits, state = pruned_run(session, inputs)
    reference = NeverPresent(session.model, session.adapter, inputs, state, additive_mask=False)
    ref_tokens, ref_logits = reference.run(NEW_TOKENS)
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)


def test_no_mask_is_refused_under_eager(loaded, prepared):
    """Eager attention given no mask attends to the future: the guard refuses instead of timing a wrong model."""
    session, inputs = loaded[("qwen2_vl", "eager")], prepared[("qwen2_vl", "eager")]
    with pytest.raises(ValueError, match="eager"):
        NeverPresent(session.model, session.adapter, inputs, None, additive_mask=False)


@pytest.mark.parametrize("attn", ATTNS)
def test_without_a_record_the_reference_is_the_unpruned_model(loaded, prepared, attn):
    """``state=None``: every layer keeps every token, which must be the unmodified model's own generate."""
    session, inputs = loaded[("qwen3_vl", attn)], prepared[("qwen3_vl", attn)]
    out = session.model.generate(
        **inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    tokens, logits = out.sequences[0, inputs["input_ids"].shape[1]:], torch.stack(out.logits)[:, 0].float()
    ref_tokens, ref_logits = NeverPresent(session.model, session.adapter, inputs, None).run(NEW_TOKENS)
    assert torch.equal(tokens, ref_tokens)
    torch.testing.assert_close(logits, ref_logits, atol=0 if attn == "eager" else 1e-5, rtol=0)
