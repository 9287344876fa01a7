"""Unit tests of pruning.flops."""
import pytest

from pruning.budget import stage_budgets, visual_tokens_per_layer
from pruning.flops import decoder_prefill_flops

SHAPE = dict(hidden=4, n_heads=2, n_kv_heads=1, head_dim=2, intermediate=8)


def test_hand_computed_example():
    # n=3: q 2*3*4*2*2=96, o 96, k 2*3*4*1*2=48, v 48,
    # attention 3*4/2=6 pairs * 2 matmuls * 2 FLOPs * H=2 * d=2 = 96,
    # gated MLP 3 * 2*3*4*8 = 576  -> 960 per layer
    assert decoder_prefill_flops([3], **SHAPE) == 960
    assert decoder_prefill_flops([3, 3], **SHAPE, vocab=10) == 2 * 960 + 2 * 4 * 10
    # plain MLP: 2 matrices -> 960 - 192
    assert decoder_prefill_flops([3], **SHAPE, gated_mlp=False) == 768
    # n=1: one query-key pair
    assert decoder_prefill_flops([1], **SHAPE) == 2 * 4 * 2 * (2 * 2 + 2 * 1) + 4 * 2 * 2 + 3 * 2 * 4 * 8
    assert decoder_prefill_flops([0], **SHAPE) == 0


def test_monotonic_in_sequence_length():
    prev = -1.0
    for n in range(0, 300, 7):
        f = decoder_prefill_flops([n] * 4, **SHAPE)
        assert f > prev
        prev = f
    base = decoder_prefill_flops([100, 100, 100], **SHAPE)
    assert decoder_prefill_flops([100, 99, 100], **SHAPE) < base


def test_pruned_schedule_is_cheaper():
    shape = dict(hidden=3584, n_heads=28, n_kv_heads=4, head_dim=128, intermediate=18944,
                 vocab=152064)
    L, text, N = 28, 60, 2000
    V, Rs, Rd = stage_budgets(N, L, 1 / 3, 0.5, 2, 19)
    full = decoder_prefill_flops([text + N] * L, **shape)
    pruned = decoder_prefill_flops(
        [text + v for v in visual_tokens_per_layer(L, V, Rs, Rd, 2, 19)], **shape)
    assert 0.25 < pruned / full < 0.45


@pytest.mark.parametrize("kwargs", [dict(hidden=0), dict(n_heads=-1), dict(vocab=-1)])
def test_validation(kwargs):
    shape = dict(SHAPE)
    shape.update(kwargs)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        decoder_prefill_flops([3], **shape)


def test_validation_seq_lens():
    with pytest.raises(ValueError, match="seq_len"):
        decoder_prefill_flops([], **SHAPE)
    with pytest.raises(ValueError, match="seq_len"):
        decoder_prefill_flops([3, -1], **SHAPE)
