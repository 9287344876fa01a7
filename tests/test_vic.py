"""Unit tests of pruning.vic against a naive loop implementation of the spec."""
import math

import pytest
import torch

from pruning.vic import DC_EPS, cluster, cluster_batch, cluster_frames, density_peaks


def grid_positions(n, side=16, gen=None):
    """n distinct cells of a side x side grid, as (row/side, col/side)."""
    cells = torch.randperm(side * side, generator=gen)[:n]
    return torch.stack([cells // side, cells % side], dim=1).double() / side


def naive_vic(X, P, dc, f, radius):
    """Straight loop transcription of docs VITCOP.md "VIC" (ties: canonical (row, col) order)."""
    X = X.double()
    P = P.double()
    n = X.shape[0]
    d = torch.cdist(X, X, compute_mode="donot_use_mm_for_euclid_dist").tolist()
    sp = [[math.dist(P[i].tolist(), P[j].tolist()) for j in range(n)] for i in range(n)]
    if dc == "auto":
        if n < 2:
            dc = DC_EPS
        else:
            off = torch.tensor([d[i][j] for i in range(n) for j in range(n) if i != j],
                               dtype=torch.float64)
            dc = float(torch.quantile(off, 0.02))
            if dc <= DC_EPS:
                dc = DC_EPS
    rho = [sum(math.exp(-(d[i][j] / dc) ** 2) for j in range(n)) for i in range(n)]
    canon = sorted(range(n), key=lambda i: (P[i, 0].item(), P[i, 1].item()))
    parent, delta = [-1] * n, [math.inf] * n
    for i in range(n):
        for j in canon:
            if j != i and rho[j] >= rho[i] and sp[i][j] <= radius and d[i][j] < delta[i]:
                parent[i], delta[i] = j, d[i][j]
    gamma = [rho[i] * delta[i] for i in range(n)]
    cpos = {i: k for k, i in enumerate(canon)}
    n_c = max(1, math.floor(f * n + 1e-9))
    centres = sorted(range(n), key=lambda i: (-gamma[i], cpos[i]))[:n_c]
    labels = [-1] * n
    for r, c in enumerate(centres):
        labels[c] = r
    changed = True
    while changed:
        changed = False
        for i in range(n):
            if i not in centres and parent[i] >= 0 and labels[i] != labels[parent[i]]:
                labels[i] = labels[parent[i]]
                changed = True
    return torch.tensor(labels), parent, delta, rho, dc


@pytest.mark.parametrize("seed", range(12))
def test_matches_naive(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 60, (1,), generator=g))
    D = int(torch.randint(1, 9, (1,), generator=g))
    X = torch.randn(n, D, generator=g)
    P = grid_positions(n, gen=g)
    f = [0.05, 0.12, 0.18, 0.5][seed % 4]
    radius = [0.6, 0.2, 0.35, 2.0][seed % 4]
    dc = "auto" if seed % 3 else 1.5
    expected, parent, delta, rho, dc_used = naive_vic(X, P, dc, f, radius)
    got = cluster(X, P, dc=dc, center_fraction=f, radius=radius)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)
    dp = density_peaks(X, P, dc=dc, radius=radius)
    assert dp.parent.tolist() == parent
    assert dp.dc == pytest.approx(dc_used, rel=1e-9)
    torch.testing.assert_close(dp.rho, torch.tensor(rho, dtype=torch.float64))


def test_label_range_and_centre_count():
    g = torch.Generator().manual_seed(1)
    X, P = torch.randn(100, 6, generator=g), grid_positions(100, gen=g)
    lab = cluster(X, P, dc="auto", center_fraction=0.15, radius=0.6)
    centres = set(lab.tolist()) - {-1}
    assert centres == set(range(15))


@pytest.mark.parametrize("kind", ["continuous", "duplicated_features", "shared_positions"])
def test_permutation_stable(kind):
    g = torch.Generator().manual_seed(7)
    n = 80
    if kind == "duplicated_features":  # many exact ties in d, rho and gamma
        base = torch.randn(4, 5, generator=g)
        X = base[torch.randint(0, 4, (n,), generator=g)]
    else:
        X = torch.randn(n, 5, generator=g)
    P = grid_positions(n, side=12, gen=g)
    if kind == "shared_positions":  # positions coincide; features differ
        P[1::2] = P[0::2]
    for radius in (0.6, 0.15):
        ref = cluster(X, P, dc="auto", center_fraction=0.12, radius=radius)
        for _ in range(5):
            perm = torch.randperm(n, generator=g)
            got = cluster(X[perm], P[perm], dc="auto", center_fraction=0.12, radius=radius)
            assert torch.equal(got, ref[perm])


def _blob(centre_feat, rows, cols, side, gen):
    pos = torch.tensor([[r / side, c / side] for r in rows for c in cols], dtype=torch.float64)
    feats = centre_feat + 0.05 * torch.randn(len(pos), centre_feat.numel(), generator=gen,
                                             dtype=torch.float64)
    return feats, pos


def test_two_blobs_and_far_token():
    g = torch.Generator().manual_seed(3)
    side = 10
    fa, pa = _blob(torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64), range(3), range(3), side, g)
    fb, pb = _blob(torch.tensor([4.0, 4.0, 0.0], dtype=torch.float64), range(7, 10), range(7, 10), side, g)
    ff = torch.tensor([[2.0, 2.0, 0.0]], dtype=torch.float64)  # in between in feature space...
    pf = torch.tensor([[0.0, 0.95]], dtype=torch.float64)      # ...but > radius from every token
    X = torch.cat([fa, fb, ff])
    P = torch.cat([pa, pb, pf])
    n = X.shape[0]
    lab = cluster(X, P, dc="auto", center_fraction=3 / n, radius=0.6)
    la, lb, lf = lab[:9], lab[9:18], lab[18]
    assert (la == la[0]).all() and (lb == lb[0]).all()
    assert la[0] >= 0 and lb[0] >= 0 and la[0] != lb[0]
    assert lf == -1 or (lf not in (la[0], lb[0]))
    # the far token has no parent at all
    assert density_peaks(X, P, dc="auto", radius=0.6).parent[18] == -1
    # with two centres only, the blobs still never mix
    lab2 = cluster(X, P, dc="auto", center_fraction=2 / n, radius=0.6)
    assert not set(lab2[:9].tolist()) & set(lab2[9:18].tolist()) - {-1}


def test_cycle_without_centre_is_minus_one():
    # Two identical tokens (equal rho) are each other's parent; no centre in the cycle.
    X = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    P = torch.tensor([[0.1, 0.1], [0.1, 0.2], [0.9, 0.9]])
    dp = density_peaks(X, P, dc=1.0, radius=0.6)
    assert dp.parent.tolist() == [1, 0, -1]
    lab = cluster(X, P, dc=1.0, center_fraction=0.34, radius=0.6)
    assert lab.tolist() == [-1, -1, 0]
    # with two centres the first of the pair (canonical order) is a centre, the other follows
    lab = cluster(X, P, dc=1.0, center_fraction=0.67, radius=0.6)
    assert lab.tolist() == [1, 1, 0]


@pytest.mark.parametrize("seed", range(5))
def test_radius_respected(seed):
    g = torch.Generator().manual_seed(100 + seed)
    n, radius = 150, 0.21  # not a grid distance (sqrt(k)/20), so no boundary ties
    X = torch.randn(n, 4, generator=g)
    P = grid_positions(n, side=20, gen=g)
    dp = density_peaks(X, P, dc="auto", radius=radius)
    d = torch.cdist(X.double(), X.double(), compute_mode="donot_use_mm_for_euclid_dist")
    sp = torch.cdist(P, P, compute_mode="donot_use_mm_for_euclid_dist")
    has = dp.parent >= 0
    idx = torch.arange(n)[has]
    par = dp.parent[has]
    assert (sp[idx, par] <= radius + 1e-12).all()
    assert (dp.rho[par] >= dp.rho[idx]).all()
    torch.testing.assert_close(dp.delta[has], d[idx, par])
    assert torch.isinf(dp.delta[~has]).all()
    # parentless tokens have no admissible neighbour
    for i in torch.arange(n)[~has].tolist():
        ok = (dp.rho >= dp.rho[i]) & (sp[i] <= radius)
        ok[i] = False
        assert not ok.any()


def test_degenerate_inputs():
    # n == 1
    assert cluster(torch.randn(1, 4), torch.zeros(1, 2), dc="auto", center_fraction=0.1,
                   radius=0.6).tolist() == [0]
    # all features equal: the 2% quantile is 0 -> dc = DC_EPS, no division by zero
    X = torch.ones(20, 3)
    P = grid_positions(20, gen=torch.Generator().manual_seed(0))
    dp = density_peaks(X, P, dc="auto", radius=0.6)
    assert dp.dc == DC_EPS and torch.isfinite(dp.rho).all()
    lab = cluster(X, P, dc="auto", center_fraction=0.1, radius=0.6)
    assert lab.shape == (20,) and lab.min() >= -1 and lab.max() <= 1
    # empty input
    assert cluster(torch.empty(0, 3), torch.empty(0, 2), dc="auto", center_fraction=0.1,
                   radius=0.6).numel() == 0


def test_low_precision_input_dtype():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(50, 8, generator=g)
    P = grid_positions(50, gen=g)
    lab = cluster(X.to(torch.bfloat16), P.to(torch.bfloat16), dc="auto", center_fraction=0.18,
                  radius=0.6)
    ref = cluster(X.to(torch.bfloat16).float(), P.to(torch.bfloat16).float(), dc="auto",
                  center_fraction=0.18, radius=0.6)
    assert lab.dtype == torch.int64 and torch.equal(lab, ref)


@pytest.mark.parametrize("kwargs, match", [
    (dict(dc="max"), "dc"), (dict(dc=0.0), "dc"), (dict(center_fraction=0.0), "center_fraction"),
    (dict(center_fraction=1.5), "center_fraction"), (dict(radius=-1.0), "radius"),
])
def test_argument_validation(kwargs, match):
    args = dict(dc="auto", center_fraction=0.1, radius=0.6)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        cluster(torch.randn(5, 2), torch.rand(5, 2), **args)


# ---- many frames at once: cluster_batch / cluster_frames ------------------------------------------
def frames_input(seed):
    """Tokens of several frames in shuffled order: (features (N, D), positions (N, 2), frame ids (N,)).
    Some frames share a token count (batched together), one is different; some seeds force exact ties
    (rounded features) or coinciding positions (the feature-lexsort fallback)."""
    g = torch.Generator().manual_seed(seed)
    counts = [40, 40, 40, 23, 40, 1][: 2 + seed % 5]
    D = int(torch.randint(1, 9, (1,), generator=g))
    feats, poss, ids = [], [], []
    for k, n in enumerate(counts):
        X = torch.randn(n, D, generator=g)
        if seed % 3 == 0:
            X = X.round()
        P = grid_positions(n, side=8, gen=g)
        if seed % 4 == 1 and n > 1:
            P[1::2] = P[0::2][: P[1::2].shape[0]]
        feats.append(X)
        poss.append(P)
        ids.append(torch.full((n,), 10 * k + 3))
    perm = torch.randperm(sum(counts), generator=g)
    return torch.cat(feats)[perm], torch.cat(poss)[perm], torch.cat(ids)[perm]


@pytest.mark.parametrize("seed", range(16))
def test_frames_at_once_equal_frame_by_frame(seed):
    """cluster_frames (frames of one size share each op) == cluster on each frame's tokens in input order."""
    X, P, ids = frames_input(seed)
    kw = dict(dc="auto" if seed % 2 else 0.8, center_fraction=[0.1, 0.3, 1.0][seed % 3], radius=[0.6, 0.2][seed % 2])
    got = cluster_frames(X, P, ids, **kw)
    expected = torch.full_like(got, -2)
    for f in torch.unique(ids).tolist():
        idx = (ids == f).nonzero().flatten()
        expected[idx] = cluster(X[idx], P[idx], **kw)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("seed", range(4))
def test_a_batch_matches_the_naive_loop_frame_by_frame(seed):
    g = torch.Generator().manual_seed(100 + seed)
    X = torch.randn(5, 30, 4, generator=g)
    P = torch.stack([grid_positions(30, gen=g) for _ in range(5)])
    got = cluster_batch(X, P, dc="auto", center_fraction=0.2, radius=0.4)
    assert got.shape == (5, 30)
    for frame in range(5):
        assert torch.equal(got[frame], naive_vic(X[frame], P[frame], "auto", 0.2, 0.4)[0])


def test_batched_inputs_are_checked():
    with pytest.raises(ValueError, match=r"features must be \(G, n, D\)"):
        cluster_batch(torch.randn(4, 3), torch.rand(4, 2), dc="auto", center_fraction=0.5, radius=0.6)
    with pytest.raises(ValueError, match="positions must be"):
        cluster_batch(torch.randn(2, 4, 3), torch.rand(2, 5, 2), dc="auto", center_fraction=0.5, radius=0.6)
    with pytest.raises(ValueError, match="center_fraction"):
        cluster_frames(torch.randn(4, 3), torch.rand(4, 2), torch.zeros(4), dc="auto", center_fraction=0, radius=0.6)
    with pytest.raises(ValueError, match="frame_ids must be"):
        cluster_frames(torch.randn(4, 3), torch.rand(4, 2), torch.zeros(3), dc="auto", center_fraction=0.5, radius=0.6)
    empty = cluster_frames(torch.randn(0, 3), torch.rand(0, 2), torch.zeros(0), dc="auto", center_fraction=0.5,
                           radius=0.6)
    assert empty.shape == (0,) and empty.dtype == torch.int64
