"""Unit tests of pruning.select against naive implementations of the spec rules."""
import math
import random
from fractions import Fraction

import pytest
import torch

from pruning.select import (SelectionPlan, cluster_select, frame_group_ids, merge_values,
                            per_frame_topk, smallest_k)


def naive_cluster_select(groups, scores, R):
    """Loop transcription of docs VITCOP.md Stage II. Returns (kept set, list of member sets)."""
    groups, scores = groups.tolist(), scores.tolist()
    V = len(groups)
    ids = sorted(set(groups))
    members = {g: [i for i in range(V) if groups[i] == g] for g in ids}
    T = {g: math.fsum(scores[i] for i in members[g]) for g in ids}
    asc = sorted(ids, key=lambda g: (T[g], g))
    desc = sorted(ids, key=lambda g: (-T[g], g))
    K = len(ids)
    if K > R:
        merged = [set(members[g]) for g in asc[:R - 1]]
        rest = set()
        for g in asc[R - 1:]:
            rest |= set(members[g])
        return set(), merged + [rest]
    cap = {g: len(members[g]) - 1 for g in ids}
    quota = {g: (round(Fraction(cap[g] * (R - K), V - K)) if V > K else 0) for g in ids}
    quota = {g: min(quota[g], cap[g]) for g in ids}
    diff = (R - K) - sum(quota.values())
    while diff != 0:
        for g in (asc if diff > 0 else desc):
            if diff > 0 and quota[g] < cap[g]:
                quota[g] += 1
                diff -= 1
            elif diff < 0 and quota[g] > 0:
                quota[g] -= 1
                diff += 1
            if diff == 0:
                break
    kept, merged = set(), []
    for g in ids:
        by_t = sorted(members[g], key=lambda i: (scores[i], i))
        kept |= set(by_t[:quota[g]])
        merged.append(set(by_t[quota[g]:]))
    return kept, merged


def check_plan(plan, V, R):
    assert isinstance(plan, SelectionPlan)
    assert plan.kept.dtype == torch.int64 and plan.anchors.dtype == torch.int64
    assert len(plan.kept) + len(plan.groups) == R == plan.n_tokens
    assert torch.equal(plan.kept, torch.sort(plan.kept).values)
    everything = plan.kept.tolist()
    for g, a in zip(plan.groups, plan.anchors.tolist()):
        assert g.numel() >= 1 and torch.equal(g, torch.sort(g).values)
        assert g[len(g) // 2] == a                       # anchor = group median
        everything += g.tolist()
    assert sorted(everything) == list(range(V))          # disjoint and covering
    assert plan.anchors.tolist() == sorted(plan.anchors.tolist())
    assert torch.equal(plan.indices, torch.sort(torch.cat([plan.kept, plan.anchors])).values)


def random_case(rng, V, K):
    ids = rng.sample(range(-50, 10_000), K)               # arbitrary, non-contiguous ids
    assign = [ids[i % K] for i in range(V)]               # every id used at least once
    rng.shuffle(assign)
    return torch.tensor(assign), torch.tensor([rng.random() for _ in range(V)])


def test_random_against_naive():
    rng = random.Random(0)
    for _ in range(400):
        V = rng.randint(1, 80)
        K = rng.randint(1, V)
        R = rng.choice([1, K, V, rng.randint(1, V), max(1, K - 1), min(V, K + 1)])
        groups, scores = random_case(rng, V, K)
        plan = cluster_select(groups, scores, R)
        check_plan(plan, V, R)
        kept, merged = naive_cluster_select(groups, scores, R)
        assert set(plan.kept.tolist()) == kept
        assert sorted(map(sorted, (g.tolist() for g in plan.groups))) == sorted(map(sorted, merged))


def test_ties_follow_documented_order():
    rng = random.Random(1)
    for _ in range(200):
        V = rng.randint(2, 40)
        K = rng.randint(1, V)
        R = rng.randint(1, V)
        groups, _ = random_case(rng, V, K)
        scores = torch.tensor([float(rng.randint(0, 3)) for _ in range(V)])  # many ties
        plan = cluster_select(groups, scores, R)
        check_plan(plan, V, R)
        kept, merged = naive_cluster_select(groups, scores, R)
        assert set(plan.kept.tolist()) == kept
        assert sorted(map(sorted, (g.tolist() for g in plan.groups))) == sorted(map(sorted, merged))


def test_kept_are_the_smallest_scores_of_their_group():
    rng = random.Random(2)
    for _ in range(100):
        V = rng.randint(10, 200)
        K = rng.randint(1, V // 2)
        R = rng.randint(K, V)
        groups, scores = random_case(rng, V, K)
        plan = cluster_select(groups, scores, R)
        check_plan(plan, V, R)
        kept = set(plan.kept.tolist())
        for members in plan.groups:
            gid = groups[members[0]]
            whole = (groups == gid).nonzero().reshape(-1).tolist()
            assert set(whole) - kept == set(members.tolist())   # K <= R: one merged token per group
            kept_here = [i for i in whole if i in kept]
            if kept_here:
                assert max(scores[kept_here]) <= scores[members].min()


def test_special_shapes():
    scores = torch.rand(10)
    # R == 1: everything merges into one token
    plan = cluster_select(torch.arange(10), scores, 1)
    check_plan(plan, 10, 1)
    assert plan.groups[0].tolist() == list(range(10)) and plan.anchors.tolist() == [5]
    # K == V == R: every token is its own one-member "merged" group
    plan = cluster_select(torch.arange(10), scores, 10)
    check_plan(plan, 10, 10)
    assert plan.kept.numel() == 0 and len(plan.groups) == 10
    # K == 1, R == V: one group keeps all but one member
    plan = cluster_select(torch.zeros(10, dtype=torch.long), scores, 10)
    check_plan(plan, 10, 10)
    assert plan.kept.numel() == 9 and plan.groups[0].tolist() == [int(scores.argmax())]
    # K > R: the R-1 lightest groups each become a token, the rest one token
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    sc = torch.tensor([1.0, 1.0, 0.1, 0.1, 5.0, 5.0, 0.5, 0.5])
    plan = cluster_select(groups, sc, 3)
    check_plan(plan, 8, 3)
    assert sorted(g.tolist() for g in plan.groups) == [[0, 1, 4, 5], [2, 3], [6, 7]]
    assert plan.anchors.tolist() == [3, 4, 7]


def test_quota_rounding_and_fix_up():
    # V=7, K=2 (sizes 4 and 3), R=4: quotas round(3/5*2)=1 and round(2/5*2)=1 -> sum 2 == R-K
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    scores = torch.tensor([0.4, 0.1, 0.3, 0.2, 0.9, 0.8, 0.7])
    plan = cluster_select(groups, scores, 4)
    assert plan.kept.tolist() == [1, 6]
    assert [g.tolist() for g in plan.groups] == [[0, 2, 3], [4, 5]]
    # sizes 2,2,2 (caps 1), V=6, K=3, R=4: quotas round(1/3)=0 each -> short by 1;
    # ascending T walk gives the extra slot to the lightest group (ids 7).
    groups = torch.tensor([5, 5, 7, 7, 9, 9])
    scores = torch.tensor([3.0, 3.0, 1.0, 2.0, 4.0, 4.0])
    plan = cluster_select(groups, scores, 4)
    assert plan.kept.tolist() == [2]


@pytest.mark.parametrize("bad", [0, 11, -1, 2.5, True])
def test_budget_validation(bad):
    with pytest.raises(ValueError, match="budget"):
        cluster_select(torch.arange(10), torch.rand(10), bad)


def test_merge_values_hand_made():
    h = torch.tensor([[1.0, 0.0], [2.0, 2.0], [3.0, 4.0], [9.0, 9.0], [5.0, -1.0]])
    plan = SelectionPlan(kept=torch.tensor([3]), groups=[torch.tensor([0, 1, 2]), torch.tensor([4])],
                         anchors=torch.tensor([1, 4]), n_visual=5)
    idx, val = merge_values(h, plan, "reference")
    assert idx.tolist() == [1, 3, 4]
    torch.testing.assert_close(val, torch.tensor([[2.0 + 2.0, 2.0 + 2.0], [9.0, 9.0], [10.0, -2.0]]))
    idx, val = merge_values(h, plan, "mean")
    assert idx.tolist() == [1, 3, 4]
    torch.testing.assert_close(val, torch.tensor([[2.0, 2.0], [9.0, 9.0], [5.0, -1.0]]))
    with pytest.raises(ValueError, match="rule"):
        merge_values(h, plan, "max")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_merge_values_random_against_naive(dtype):
    g = torch.Generator().manual_seed(0)
    V, D = 60, 8
    groups = torch.randint(0, 9, (V,), generator=g)
    scores = torch.rand(V, generator=g)
    h = torch.randn(V, D, generator=g).to(dtype)
    for R in (1, 5, 9, 30, 60):
        plan = cluster_select(groups, scores, R)
        idx, val = merge_values(h, plan)
        assert val.dtype == dtype and idx.shape == (R,) and val.shape == (R, D)
        rows = {}
        for i in plan.kept.tolist():
            rows[i] = h[i].double()
        for mem, a in zip(plan.groups, plan.anchors.tolist()):
            rows[a] = h[a].double() + h[mem].double().mean(0)
        assert idx.tolist() == sorted(rows)
        ref = torch.stack([rows[i] for i in sorted(rows)]).to(dtype)
        torch.testing.assert_close(val, ref)
        for i in plan.kept.tolist():                       # kept rows bit-identical
            assert torch.equal(val[idx.tolist().index(i)], h[i])


def test_per_frame_topk():
    g = torch.Generator().manual_seed(0)
    frames = torch.tensor([3] * 10 + [-1] * 7 + [8] * 1 + [3] * 5)   # non-contiguous
    scores = torch.rand(frames.numel(), generator=g)
    for keep in (0.01, 0.3, 0.5, 1.0):
        got = per_frame_topk(scores, frames, keep)
        assert torch.equal(got, torch.sort(got).values)
        expected = []
        for f in frames.unique().tolist():
            idx = (frames == f).nonzero().reshape(-1).tolist()
            k = max(1, math.floor(keep * len(idx) + 1e-9))
            expected += sorted(idx, key=lambda i: (-scores[i].item(), i))[:k]
        assert got.tolist() == sorted(expected)
    got = per_frame_topk(scores, frames, 0.3)
    counts = {f: int((frames[got] == f).sum()) for f in (3, -1, 8)}
    assert counts == {3: 4, -1: 2, 8: 1}
    with pytest.raises(ValueError, match="keep_fraction"):
        per_frame_topk(scores, frames, 0.0)


def test_smallest_k():
    scores = torch.tensor([0.5, 0.1, 0.9, 0.1, 0.3])
    assert smallest_k(scores, 2).tolist() == [1, 3]
    assert smallest_k(scores, 3).tolist() == [1, 3, 4]
    assert smallest_k(scores, 0).tolist() == []
    assert smallest_k(scores, 5).tolist() == [0, 1, 2, 3, 4]
    g = torch.Generator().manual_seed(1)
    s = torch.rand(100, generator=g)
    assert smallest_k(s, 17).tolist() == sorted(sorted(range(100), key=lambda i: s[i].item())[:17])
    with pytest.raises(ValueError, match="k"):
        smallest_k(scores, 6)


def test_frame_group_ids():
    labels = torch.tensor([0, 1, -1, 0, -1, 0, -1, 1, -1])
    frames = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1])
    ids = frame_group_ids(labels, frames)
    assert ids.dtype == torch.int64
    pairs = list(zip(frames.tolist(), labels.tolist()))
    for i in range(len(pairs)):
        for j in range(len(pairs)):
            assert (ids[i] == ids[j]) == (pairs[i] == pairs[j])
    assert sorted(set(ids.tolist())) == list(range(6))   # (0,-1),(0,0),(0,1),(1,-1),(1,0),(1,1)
