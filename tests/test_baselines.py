"""Unit tests of pruning.baselines against hand-computed values and naive implementations."""
import math
import random
from fractions import Fraction

import pytest
import torch

from pruning.baselines import (evenly_spaced, last_query_attention, max_min_diverse,
                               single_cut_budget)


# ---------------------------------------------------------------- single_cut_budget

@pytest.mark.parametrize("N, L, r, c, expected", [
    (576, 32, 1 / 9, 0, 64),
    (576, 32, 1 / 9, 2, 30),        # round((2048 - 1152) / 30) = round(29.87)
    (576, 32, 1 / 3, 0, 192),
    (576, 32, 1 / 3, 2, 166),       # round((6144 - 1152) / 30) = round(166.4)
    (576, 32, 1.0, 5, 576),
    (576, 28, 0.25, 0, 144),
    (100, 4, 0.5, 1, 33),           # round((200 - 100) / 3) = round(33.3)
    (10, 4, 0.125, 0, 1),           # round(1.25)
    (10, 4, 0.15, 0, 2),            # round(1.5) -> 2 (half to even)
    (10, 4, 0.25, 0, 2),            # round(2.5) -> 2 (half to even)
    (576, 32, 1 / 9, 4, 1),         # unreachable: 2048 - 2304 < 0 -> clamp to 1
    (1, 1, 0.01, 0, 1),
])
def test_single_cut_budget_values(N, L, r, c, expected):
    assert single_cut_budget(N, L, r, cut_layer=c) == expected


def test_single_cut_budget_default_cut_is_zero():
    assert single_cut_budget(576, 32, 1 / 9) == single_cut_budget(576, 32, 1 / 9, 0) == 64


def test_single_cut_budget_layer_average_property():
    rng = random.Random(0)
    for _ in range(3000):
        N = rng.randint(1, 5000)
        L = rng.randint(1, 80)
        c = rng.randrange(L)
        r = rng.uniform(1e-3, 1.0)
        R = single_cut_budget(N, L, r, cut_layer=c)
        assert isinstance(R, int) and 1 <= R <= N
        avg = (c * N + (L - c) * R) / L
        target = r * N
        exact = (L * r * N - c * N) / (L - c)
        if exact >= 1:
            # unclamped: R within 1/2 of the exact value, so the average within (L-c)/(2L)
            assert abs(R - exact) <= 0.5 + 1e-9
            assert abs(avg - target) <= (L - c) / (2 * L) + 1e-9
        elif exact < 0.5:
            assert R == 1 and avg > target - 1e-9      # unreachable: average above target


def test_single_cut_budget_validation():
    with pytest.raises(ValueError, match="cut_layer"):
        single_cut_budget(576, 32, 0.5, cut_layer=32)
    with pytest.raises(ValueError, match="cut_layer"):
        single_cut_budget(576, 32, 0.5, cut_layer=-1)
    with pytest.raises(ValueError, match="ratio"):
        single_cut_budget(576, 32, 0.0)
    with pytest.raises(ValueError, match="ratio"):
        single_cut_budget(576, 32, 1.5)
    with pytest.raises(ValueError, match="n_visual"):
        single_cut_budget(0, 32, 0.5)
    with pytest.raises(ValueError, match="n_layers"):
        single_cut_budget(576, 0, 0.5)


# ---------------------------------------------------------------- evenly_spaced

@pytest.mark.parametrize("n, k, expected", [
    (1, 1, [0]),
    (10, 1, [5]),
    (9, 1, [4]),
    (10, 2, [0, 9]),
    (10, 3, [0, 4, 9]),             # 0, 4.5 -> 4 (half to even), 9
    (4, 3, [0, 2, 3]),              # 0, 1.5 -> 2, 3
    (10, 4, [0, 3, 6, 9]),
    (10, 5, [0, 2, 4, 7, 9]),       # 0, 2.25, 4.5, 6.75, 9
    (5, 5, [0, 1, 2, 3, 4]),
    (6, 5, [0, 1, 2, 4, 5]),        # 0, 1.25, 2.5, 3.75, 5
    (8, 7, [0, 1, 2, 4, 5, 6, 7]),  # 7/6 steps: 3.5 -> 4
])
def test_evenly_spaced_values(n, k, expected):
    out = evenly_spaced(n, k)
    assert out.dtype == torch.int64
    assert out.tolist() == expected


def test_evenly_spaced_all_small_cases():
    for n in range(1, 51):
        for k in range(1, n + 1):
            out = evenly_spaced(n, k)
            got = out.tolist()
            assert out.dtype == torch.int64 and len(got) == k
            assert all(a < b for a, b in zip(got, got[1:])), (n, k, got)   # sorted, unique
            assert 0 <= got[0] and got[-1] <= n - 1
            if k == 1:
                assert got == [n // 2]
                continue
            assert got[0] == 0 and got[-1] == n - 1
            assert got == [round(Fraction(i * (n - 1), k - 1)) for i in range(k)], (n, k)
            lin = torch.linspace(0, n - 1, k, dtype=torch.float64)
            frac = lin - lin.floor()
            clear = (frac - 0.5).abs() > 1e-6          # linspace agrees away from .5 ties
            assert torch.equal(lin.round().long()[clear], out[clear])


def test_evenly_spaced_large_exact():
    n, k = 1_000_003, 999_983
    out = evenly_spaced(n, k)
    assert out.numel() == k and bool((out[1:] > out[:-1]).all())
    assert out[0] == 0 and out[-1] == n - 1
    for i in (1, 17, k // 2, k - 2):
        assert out[i] == round(Fraction(i * (n - 1), k - 1))


def test_evenly_spaced_validation():
    with pytest.raises(ValueError, match="k"):
        evenly_spaced(5, 6)
    with pytest.raises(ValueError, match="k"):
        evenly_spaced(5, 0)
    with pytest.raises(ValueError, match="n"):
        evenly_spaced(0, 1)


# ---------------------------------------------------------------- max_min_diverse

def naive_max_min(features, k):
    """Pure-Python transcription: cosine distance, start farthest from the mean, greedy."""
    rows = features.double().tolist()
    n, D = len(rows), len(rows[0])

    def unit(v):
        nv = max(math.sqrt(math.fsum(x * x for x in v)), 1e-12)
        return [x / nv for x in v]

    mean = [math.fsum(r[j] for r in rows) / n for j in range(D)]
    u, um = [unit(r) for r in rows], unit(mean)

    def dist(a, b):
        return min(2.0, max(0.0, 1.0 - math.fsum(x * y for x, y in zip(a, b))))

    d0 = [dist(ui, um) for ui in u]
    first = max(range(n), key=lambda i: (d0[i], -i))
    chosen = [first]
    while len(chosen) < k:
        best, best_score = None, -1.0
        for i in range(n):
            if i in chosen:
                continue
            s = min(dist(u[i], u[j]) for j in chosen)
            if s > best_score:                      # strict: ties keep the lower index
                best, best_score = i, s
        chosen.append(best)
    return sorted(chosen), chosen


@pytest.mark.parametrize("seed, n, D, k, dtype", [
    (0, 40, 8, 10, torch.float64),
    (1, 60, 5, 60, torch.float64),
    (2, 50, 16, 7, torch.float32),
    (3, 30, 3, 12, torch.float64),
    (4, 25, 2, 25, torch.float32),
])
def test_max_min_diverse_matches_naive(seed, n, D, k, dtype):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, D, generator=g, dtype=torch.float64) + 0.3).to(dtype)
    out = max_min_diverse(x, k)
    assert out.dtype == torch.int64
    assert out.tolist() == naive_max_min(x, k)[0]


def test_max_min_diverse_first_pick_and_order():
    # mean points along +x; token 2 points most away from it, then token 3 is farthest from 2
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.05], [0.0, 1.0], [1.0, -0.05]])
    assert naive_max_min(x, 3)[1] == [2, 4, 3]
    assert max_min_diverse(x, 1).tolist() == [2]
    assert max_min_diverse(x, 2).tolist() == [2, 4]
    assert max_min_diverse(x, 3).tolist() == [2, 3, 4]


def test_max_min_diverse_one_per_cluster():
    g = torch.Generator().manual_seed(5)
    k, per, D = 6, 20, 32
    centres = torch.linalg.qr(torch.randn(D, k, generator=g)).Q.T      # orthonormal directions
    x = centres.repeat_interleave(per, dim=0) + 0.02 * torch.randn(k * per, D, generator=g)
    perm = torch.randperm(k * per, generator=g)
    x, cluster = x[perm], torch.arange(k).repeat_interleave(per)[perm]
    out = max_min_diverse(x, k)
    assert sorted(cluster[out].tolist()) == list(range(k))


def test_max_min_diverse_bfloat16_and_duplicates():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(64, 16, generator=g)
    xb = x.bfloat16()
    out = max_min_diverse(xb, 20)
    assert out.dtype == torch.int64 and out.numel() == 20
    assert out.tolist() == naive_max_min(xb.float(), 20)[0]
    # exact duplicates: distance clamps to 0, so with k = n all are picked, ties lower index
    dup = torch.tensor([[1.0, 2.0]] * 3 + [[-1.0, 0.5]] * 2).bfloat16()
    assert max_min_diverse(dup, 2).tolist() == [0, 3]
    assert max_min_diverse(dup, 5).tolist() == [0, 1, 2, 3, 4]


def test_max_min_diverse_parallel_copies_tie():
    # copies of one direction at different scales: float noise makes 1 - cos(f_i, f_j) come
    # out as -1.2e-7 for some pairs; the [0, 2] clamp makes them exact ties (lower index)
    v = torch.randn(16, generator=torch.Generator().manual_seed(0))
    scales = torch.tensor([1.0, 3.0, 7.0, 0.3, 11.0, 0.01, -2.5])
    x = scales[:, None] * v
    f = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
    to6, to0 = 1 - f[:6] @ f[6], 1 - f[1:6] @ f[0]
    if not ((to6 >= 2).all() and (to0 <= 0).all() and (to0 < 0).any()):
        pytest.skip("this BLAS rounds differently; the clamp is not exercised")
    # first -v (farthest from the mean direction v), then token 0, then the lowest index 1
    # (unclamped, a copy at exactly 0 would beat one at -1.2e-7)
    assert max_min_diverse(x, 3).tolist() == [0, 1, 6]


def test_max_min_diverse_zero_vectors():
    x = torch.zeros(5, 4)
    assert max_min_diverse(x, 3).tolist() == [0, 1, 2]          # all distances 1: lower index
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.9, 0.1], [0.0, 0.0], [1.0, 0.05]])
    out = max_min_diverse(y, 3)
    assert out.tolist() == naive_max_min(y, 3)[0]
    assert torch.isfinite(out.double()).all()


def test_max_min_diverse_validation():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="k"):
        max_min_diverse(x, 6)
    with pytest.raises(ValueError, match="k"):
        max_min_diverse(x, 0)
    with pytest.raises(ValueError, match="features"):
        max_min_diverse(x[0], 1)


# ---------------------------------------------------------------- last_query_attention

def naive_last_query(q, keys, scale=None):
    H, d = q.shape
    H_kv = keys.shape[0]
    rep = H // H_kv
    k_rep = keys[:, None].expand(H_kv, rep, *keys.shape[1:]).reshape(H, *keys.shape[1:])
    s = 1 / math.sqrt(d) if scale is None else scale
    per_head = []
    for h in range(H):
        logits = (k_rep[h].double() @ q[h].double()) * s
        per_head.append(torch.softmax(logits, dim=0))
    return torch.stack(per_head), torch.stack(per_head).mean(0)


@pytest.mark.parametrize("H, H_kv, n, d, scale", [
    (4, 4, 11, 8, None), (8, 2, 30, 16, None), (6, 1, 7, 4, 0.3), (12, 4, 50, 32, None),
])
def test_last_query_attention_matches_naive(H, H_kv, n, d, scale):
    g = torch.Generator().manual_seed(H * 100 + n)
    q = torch.randn(H, d, generator=g)
    keys = torch.randn(H_kv, n, d, generator=g)
    out = last_query_attention(q, keys, scale)
    per_head, expected = naive_last_query(q, keys, scale)
    assert out.dtype == torch.float32 and out.shape == (n,)
    assert torch.allclose(per_head.sum(dim=1), torch.ones(H, dtype=torch.float64))
    assert torch.allclose(out.double(), expected, atol=1e-6)
    assert abs(float(out.sum()) - 1.0) < 1e-5


def test_last_query_attention_bfloat16():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(8, 16, generator=g).bfloat16()
    keys = torch.randn(2, 20, 16, generator=g).bfloat16()
    out = last_query_attention(q, keys)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), naive_last_query(q.float(), keys.float())[1], atol=1e-6)


def test_last_query_attention_gqa_grouping():
    # 4 query heads, 2 kv heads: heads 0,1 read kv head 0 and heads 2,3 read kv head 1
    # (repeat_kv). Only kv head 1 has a large key (token 3); zero keys give uniform rows.
    H, H_kv, n, d = 4, 2, 5, 4
    keys = torch.zeros(H_kv, n, d)
    keys[1, 3] = 10.0
    focus = 0.5 / n + 0.5                # two of four heads put ~all their mass on token 3
    q = torch.zeros(H, d)
    q[[2, 3]] = 1.0                      # heads 2, 3 -> kv head 1 (interleaved h % H_kv: 0, 1)
    out = last_query_attention(q, keys, scale=1.0)
    expected = torch.full((n,), 0.5 / n)
    expected[3] = focus
    assert torch.allclose(out, expected, atol=1e-6)
    q = torch.zeros(H, d)
    q[[0, 1]] = 1.0                      # heads 0, 1 -> kv head 0: no large key, all uniform
    assert torch.allclose(last_query_attention(q, keys, scale=1.0), torch.full((n,), 1 / n))
    q = torch.zeros(H, d)
    q[[1, 3]] = 1.0                      # one head per kv group: only head 3 focuses
    out = last_query_attention(q, keys, scale=1.0)
    assert abs(float(out[3]) - (0.25 + 0.75 / n)) < 1e-6
    assert torch.allclose(out.double(), naive_last_query(q, keys, 1.0)[1], atol=1e-6)


def test_last_query_attention_validation():
    with pytest.raises(ValueError, match="H_kv"):
        last_query_attention(torch.randn(6, 4), torch.randn(4, 3, 4))
    with pytest.raises(ValueError, match="head_dim"):
        last_query_attention(torch.randn(4, 4), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="q_last"):
        last_query_attention(torch.randn(4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="keys"):
        last_query_attention(torch.randn(4, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="scale"):
        last_query_attention(torch.randn(4, 4), torch.randn(2, 3, 4), scale=float("nan"))
