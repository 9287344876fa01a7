"""Unit tests of pruning.evs (EVS) on hand-made tensors and against a naive transcription."""
import math
from fractions import Fraction

import pytest
import torch

from pruning.evs import evs_retained_count, evs_select, temporal_dissimilarity


# ---------------------------------------------------------------- evs_retained_count

@pytest.mark.parametrize("P, T, q, expected", [
    (192, 16, 8 / 9, 341),       # floor(3072 / 9) = floor(341.33)
    (192, 16, 0.99, 192),        # floor(30.72) < P: the first patch is the floor
    (192, 16, 0.0, 3072),        # q = 0 keeps everything
    (4, 3, 0.5, 6),
    (4, 3, 0.75, 4),             # floor(3) < P = 4
    (10, 1, 0.9, 10),            # one patch: always whole
    (7, 5, 0.2, 28),
])
def test_retained_count_values(P, T, q, expected):
    assert evs_retained_count(P, T, q) == expected


def test_retained_count_with_q_from_a_ratio_loses_no_token_to_float_error():
    # the method passes q = 1 - r; 1 - (1 - r) is not r in floats, and floor must not drop a token
    for P in (1, 3, 16, 49, 192, 196):
        for T in (1, 2, 7, 16, 32):
            for num, den in ((1, 3), (2, 9), (1, 9), (1, 7), (3, 10), (1, 2), (5, 6)):
                exact = max(P, math.floor(Fraction(T * P * num, den)))
                assert evs_retained_count(P, T, 1 - num / den) == min(T * P, exact), (P, T, num, den)


def test_retained_count_validation():
    with pytest.raises(ValueError, match="q"):
        evs_retained_count(4, 2, 1.0)
    with pytest.raises(ValueError, match="q"):
        evs_retained_count(4, 2, -0.1)
    with pytest.raises(ValueError, match="q"):
        evs_retained_count(4, 2, float("nan"))
    with pytest.raises(ValueError, match="tokens_per_patch"):
        evs_retained_count(0, 2, 0.5)
    with pytest.raises(ValueError, match="n_patches"):
        evs_retained_count(4, 0, 0.5)


# ---------------------------------------------------------------- temporal_dissimilarity

def test_dissimilarity_hand_computed():
    e = torch.tensor([
        [[1.0, 0.0], [0.0, 1.0]],
        [[2.0, 0.0], [1.0, 0.0]],     # same direction (scale ignored): 0; orthogonal: 1
        [[-1.0, 0.0], [3.0, 3.0]],    # opposite: 2; 45 degrees: 1 - 1/sqrt(2)
    ])
    d = temporal_dissimilarity(e)
    assert d.dtype == torch.float32 and d.shape == (3, 2)
    assert torch.isinf(d[0]).all()
    torch.testing.assert_close(d[1:], torch.tensor([[0.0, 1.0], [2.0, 1 - 1 / math.sqrt(2)]]))


def test_dissimilarity_zero_vectors_exact_repeats_and_dtypes():
    e = torch.zeros(2, 3, 4)
    e[1, 1:] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert temporal_dissimilarity(e)[1].tolist() == [0.0, 1.0, 1.0]   # exact repeat: 0; zero vector: cos = 0
    x = torch.randn(1, 50, 7, generator=torch.Generator().manual_seed(3)) * 1e3
    assert torch.equal(temporal_dissimilarity(x.repeat(3, 1, 1))[1:], torch.zeros(2, 50))  # no rounding noise
    assert temporal_dissimilarity(e.double()).dtype == torch.float64
    assert temporal_dissimilarity(torch.randn(3, 2, 8).bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError, match="embeds"):
        temporal_dissimilarity(torch.randn(3, 8))


# ---------------------------------------------------------------- evs_select

def naive_evs(embeds, P, q):
    """Pure-Python transcription of the paper / vLLM's compute_retention_mask."""
    rows = embeds.double().tolist()
    n = len(rows)
    T = n // P

    def cos(a, b):
        na = max(math.sqrt(math.fsum(x * x for x in a)), 1e-12)
        nb = max(math.sqrt(math.fsum(x * x for x in b)), 1e-12)
        return math.fsum(x * y for x, y in zip(a, b)) / (na * nb)

    def dist(i):
        if i < P:
            return math.inf                       # the first temporal patch is always kept
        if rows[i] == rows[i - P]:
            return 0.0                            # an exact repeat
        return min(2.0, max(0.0, 1 - cos(rows[i], rows[i - P])))

    d = [dist(i) for i in range(n)]
    keep = max(P, math.floor(n * (1 - q) + 1e-9))
    order = sorted(range(n), key=lambda i: (-d[i], i))
    return sorted(order[:min(keep, T * P)])


def _grid(T, H, W, D, background, seed=0, noise=0.0):
    g = torch.Generator().manual_seed(seed)
    e = background.expand(T, H, W, D).clone()
    return e + noise * torch.randn(T, H, W, D, generator=g)


def test_static_video_keeps_only_the_first_patch():
    g = torch.Generator().manual_seed(0)
    frame = torch.randn(3, 4, 16, generator=g)              # one 3x4 grid of tokens, repeated
    video = frame.expand(5, 3, 4, 16).reshape(60, 16)       # T = 5 identical temporal patches
    for q in (0.8, 0.9, 0.99):                              # floor(60 * (1 - q)) <= 12 = P
        assert evs_select(video, 12, q).tolist() == list(range(12))
    # a weaker rate keeps more than P: ties (all later tokens have d = 0) go to the lower index
    assert evs_select(video, 12, 0.5).tolist() == list(range(30))


def test_moving_square_is_kept():
    T, H, W, D = 4, 4, 5, 8
    g = torch.Generator().manual_seed(1)
    background, square = torch.randn(D, generator=g), torch.randn(D, generator=g)
    e = _grid(T, H, W, D, background, seed=2, noise=0.01)
    for t in range(T):                                      # a 2x2 square moving right one cell per patch
        e[t, 1:3, t:t + 2] = square
    flat = e.reshape(T * H * W, D)
    P = H * W
    changed = {t * P + r * W + c for t in range(1, T) for r in (1, 2) for c in (t - 1, t + 1)}
    assert len(changed) == 12
    # budget = first patch + exactly the changed cells: floor(80 * (1 - q)) = 32
    kept = evs_select(flat, P, 1 - 32 / 80).tolist()
    assert kept == sorted(set(range(P)) | changed)
    on_square = {t * P + r * W + c for t in range(T) for r in (1, 2) for c in (t, t + 1)}
    entered = {t * P + r * W + (t + 1) for t in range(1, T) for r in (1, 2)}  # the square's new cells
    assert entered <= set(kept) and entered <= on_square
    # a tighter budget keeps the changed cells first (all 12 score ~1.35; background noise ~1e-4)
    assert set(evs_select(flat, P, 1 - 26 / 80).tolist()) < set(kept)
    # at the strongest rate only the first patch is left, whatever moved
    assert evs_select(flat, P, 0.99).tolist() == list(range(P))


@pytest.mark.parametrize("seed, T, P, D, q, dtype", [
    (0, 6, 9, 8, 0.5, torch.float64),
    (1, 8, 16, 4, 8 / 9, torch.float64),
    (2, 3, 5, 16, 0.3, torch.float32),
    (3, 10, 4, 3, 0.7, torch.float64),
    (4, 2, 12, 6, 0.0, torch.float32),
])
def test_select_matches_naive(seed, T, P, D, q, dtype):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(T * P, D, generator=g, dtype=torch.float64) + 0.2).to(dtype)
    out = evs_select(x, P, q)
    assert out.dtype == torch.int64
    assert out.tolist() == naive_evs(x, P, q)
    assert out[:P].tolist() == list(range(P))               # the first patch is always whole
    assert out.numel() == evs_retained_count(P, T, q)


def test_select_is_ordered_and_ties_go_to_lower_index():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0],               # patch 0
                      [0.0, 1.0], [1.0, 0.0],               # patch 1: both changed by 1
                      [0.0, 1.0], [0.0, 1.0]])              # patch 2: token 4 unchanged, 5 changed by 1
    # keep = max(2, floor(6 * 0.5)) = 3: the first patch and the lowest-index token at d = 1
    assert evs_select(x, 2, 0.5).tolist() == [0, 1, 2]
    assert evs_select(x, 2, 1 / 3).tolist() == [0, 1, 2, 3]
    assert evs_select(x.bfloat16(), 2, 1 / 6).tolist() == [0, 1, 2, 3, 5]


def test_select_validation():
    with pytest.raises(ValueError, match="temporal patches"):
        evs_select(torch.randn(10, 4), 3, 0.5)
    with pytest.raises(ValueError, match="temporal patches"):
        evs_select(torch.randn(0, 4), 3, 0.5)
    with pytest.raises(ValueError, match="embeds"):
        evs_select(torch.randn(2, 3, 4), 3, 0.5)
    with pytest.raises(ValueError, match="q"):
        evs_select(torch.randn(6, 4), 3, 1.0)
