"""Unit tests of pruning.budget (pure Python)."""
import math
import random
from fractions import Fraction

import pytest

from pruning.budget import (keep_count, layer_averaged_visual, scaled_deep_layer,
                            stage_budgets, visual_tokens_per_layer)


@pytest.mark.parametrize("ratio, keep, expected", [
    (1 / 3, 0.5, (288, 253, 51)),
    (2 / 9, 0.4, (230, 165, 33)),
    (1 / 9, 0.3, (172, 77, 15)),
])
def test_reference_triples(ratio, keep, expected):
    assert stage_budgets(576, 32, ratio, keep, 2, 22, 5.0) == expected


@pytest.mark.parametrize("ratio, keep, mean", [(1 / 3, 0.5, 192), (2 / 9, 0.4, 128), (1 / 9, 0.3, 64)])
def test_reference_layer_means(ratio, keep, mean):
    V, Rs, Rd = stage_budgets(576, 32, ratio, keep, 2, 22)
    assert abs(layer_averaged_visual(32, V, Rs, Rd, 2, 22) - mean) < 1.0


@pytest.mark.parametrize("N", [1, 2, 7, 64, 576, 1000, 12345])
@pytest.mark.parametrize("L", [4, 24, 28, 32, 80])
def test_none_preset_is_identity(N, L):
    Ld = scaled_deep_layer(L)
    assert stage_budgets(N, L, 1.0, 1.0, 2, Ld, 1.0) == (N, N, N)


def _naive(N, L, r, v, Ls, Ld, q, V=None):
    if V is None:
        V = max(1, math.floor(Fraction(v) * N + Fraction(1, 10**9)))
    Rs = round((L * r * N - Ls * V) / ((Ld - Ls) + (L - Ld) / q))
    Rs = min(V, max(1, Rs))
    Rd = min(Rs, max(1, round(Rs / q)))
    return V, Rs, Rd


def test_budgets_add_up_random():
    rng = random.Random(0)
    unclamped = 0
    for _ in range(3000):
        N = rng.randint(16, 6000)
        L = rng.randint(6, 80)
        Ls = rng.randint(1, 3)
        Ld = scaled_deep_layer(L, shallow_layer=Ls)
        r = rng.uniform(0.03, 0.6)
        v = rng.uniform(max(r, 0.1), 1.0)
        q = rng.choice([1.0, 2.0, 5.0, 7.5])
        V, Rs, Rd = stage_budgets(N, L, r, v, Ls, Ld, q)
        assert (V, Rs, Rd) == _naive(N, L, r, v, Ls, Ld, q)
        assert 1 <= Rd <= Rs <= V <= N
        total = Ls * V + (Ld - Ls) * Rs + (L - Ld) * Rd
        assert total == pytest.approx(L * layer_averaged_visual(L, V, Rs, Rd, Ls, Ld))
        if 1 < Rs < V and Rd > 1:
            unclamped += 1
            bound = 0.5 * (Ld - Ls) + (L - Ld) * (0.5 / q + 0.5)
            assert abs(total - L * r * N) <= bound + 1e-6
    assert unclamped > 1000


def test_n_after_stage1_overrides_v():
    V, Rs, Rd = stage_budgets(576, 32, 1 / 3, 0.5, 2, 22, n_after_stage1=300)
    assert V == 300
    assert (V, Rs, Rd) == _naive(576, 32, 1 / 3, 0.5, 2, 22, 5.0, V=300)
    with pytest.raises(ValueError, match="n_after_stage1"):
        stage_budgets(576, 32, 1 / 3, 0.5, 2, 22, n_after_stage1=577)
    with pytest.raises(ValueError, match="n_after_stage1"):
        stage_budgets(576, 32, 1 / 3, 0.5, 2, 22, n_after_stage1=0)


def test_clamps():
    # Ls*V alone exceeds the target: Rs clamps to 1, Rd to 1.
    assert stage_budgets(100, 32, 0.01, 1.0, 2, 22) == (100, 1, 1)
    # ratio 1 with v < 1: Rs clamps to V.
    V, Rs, Rd = stage_budgets(100, 32, 1.0, 0.5, 2, 22)
    assert V == Rs == 50 and Rd == 10


def test_keep_count_floor_guard():
    assert keep_count(100, 0.29) == 29          # 0.29 * 100 == 28.999999999999996
    assert keep_count(576, 0.3) == 172
    assert keep_count(3, 0.1) == 1
    assert keep_count(5, 1.0) == 5


@pytest.mark.parametrize("kwargs, name", [
    (dict(shallow_layer=0), "shallow_layer"),
    (dict(shallow_layer=22), "shallow_layer"),
    (dict(deep_layer=32), "deep_layer"),
    (dict(ratio=0.0), "ratio"),
    (dict(ratio=1.5), "ratio"),
    (dict(vision_keep=0.0), "vision_keep"),
    (dict(vision_keep=1.01), "vision_keep"),
    (dict(deep_divisor=0.5), "deep_divisor"),
    (dict(n_visual=0), "n_visual"),
    (dict(n_layers=0), "n_layers"),
])
def test_validation_names_argument(kwargs, name):
    args = dict(n_visual=576, n_layers=32, ratio=1 / 3, vision_keep=0.5, shallow_layer=2,
                deep_layer=22, deep_divisor=5.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        stage_budgets(**args)


def test_scaled_deep_layer():
    assert scaled_deep_layer(32) == 22
    assert scaled_deep_layer(28) == 19
    assert scaled_deep_layer(24) == 16           # 16.5 -> half to even
    assert scaled_deep_layer(28, 20) == 20
    assert scaled_deep_layer(4) == 3             # round(2.75)=3, within (2, 4)
    assert scaled_deep_layer(5, shallow_layer=3) == 4  # round(3.44)=3 clamped up to 4
    for L in range(4, 200):
        Ld = scaled_deep_layer(L)
        assert 2 < Ld < L
    with pytest.raises(ValueError, match="n_layers"):
        scaled_deep_layer(3)


def test_visual_tokens_per_layer():
    per = visual_tokens_per_layer(32, 288, 253, 51, 2, 22)
    assert per == [288] * 2 + [253] * 20 + [51] * 10
    assert sum(per) / 32 == layer_averaged_visual(32, 288, 253, 51, 2, 22)
    assert layer_averaged_visual(32, 288, 253, 51, 2, 22) == (2 * 288 + 20 * 253 + 10 * 51) / 32
