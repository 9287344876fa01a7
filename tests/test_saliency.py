"""Unit tests of pruning.saliency against naive loops."""
import math

import pytest
import torch

from pruning.saliency import cls_attention, group_sum, key_norm, pseudo_cls_attention


def test_key_norm_matches_naive():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(13, 4, 8, generator=g)
    got = key_norm(keys)
    ref = [math.sqrt(sum((sum(keys[i, h, c].item() for h in range(4)) / 4) ** 2 for c in range(8)))
           for i in range(13)]
    assert got.shape == (13,) and got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor(ref))
    # leading batch dims are kept; low precision input is scored in float32
    got_b = key_norm(keys.unsqueeze(0).to(torch.bfloat16))
    assert got_b.shape == (1, 13) and got_b.dtype == torch.float32
    torch.testing.assert_close(got_b[0], key_norm(keys.to(torch.bfloat16).float()))
    with pytest.raises(ValueError):
        key_norm(torch.randn(4, 8))


def naive_softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [v / s for v in e]


def test_cls_attention_matches_naive():
    g = torch.Generator().manual_seed(1)
    H, n, d = 3, 11, 5
    q, k = torch.randn(H, d, generator=g), torch.randn(H, n, d, generator=g)
    for scale in (None, 0.7):
        s = 1 / math.sqrt(d) if scale is None else scale
        ref = [0.0] * n
        for h in range(H):
            probs = naive_softmax([sum(q[h, c].item() * k[h, i, c].item() for c in range(d)) * s
                                   for i in range(n)])
            ref = [a + b for a, b in zip(ref, probs)]
        torch.testing.assert_close(cls_attention(q, k, scale), torch.tensor(ref))


@pytest.mark.parametrize("scale", [None, 0.25])
def test_pseudo_cls_matches_per_frame_loop(scale):
    g = torch.Generator().manual_seed(2)
    H, d = 4, 6
    frames = torch.tensor([5] * 7 + [2] * 9 + [5] * 3 + [11] * 1 + [2] * 4)   # non-contiguous
    n = frames.numel()
    q, k = torch.randn(H, n, d, generator=g) * 3, torch.randn(H, n, d, generator=g) * 3
    got = pseudo_cls_attention(q, k, frames, scale)
    s = 1 / math.sqrt(d) if scale is None else scale
    ref = torch.zeros(n, dtype=torch.float64)
    for f in frames.unique().tolist():
        idx = (frames == f).nonzero().reshape(-1)
        for h in range(H):
            qm = q[h, idx].double().mean(0)
            logits = (k[h, idx].double() @ qm) * s
            ref[idx] += torch.softmax(logits, 0)
    assert got.dtype == torch.float32 and got.shape == (n,)
    torch.testing.assert_close(got, ref.float())
    for f in frames.unique().tolist():   # each frame's scores sum to H
        assert got[frames == f].sum().item() == pytest.approx(H, rel=1e-5)


def test_pseudo_cls_never_builds_n_by_n():
    # 200k patches: an n x n matrix would need 160 GB; the segment version needs ~MBs.
    n = 200_000
    q = torch.randn(1, n, 4)
    k = torch.randn(1, n, 4)
    frames = torch.arange(n) // 100_000
    out = pseudo_cls_attention(q, k, frames)
    assert out.shape == (n,)
    assert out[:100_000].sum().item() == pytest.approx(1.0, rel=1e-3)


def test_pseudo_cls_low_precision_and_shape_checks():
    q = torch.randn(2, 10, 4, dtype=torch.bfloat16)
    out = pseudo_cls_attention(q, q, torch.zeros(10, dtype=torch.long))
    assert out.dtype == torch.float32
    with pytest.raises(ValueError):
        pseudo_cls_attention(q, q[:, :5], torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError):
        pseudo_cls_attention(q, q, torch.zeros(9, dtype=torch.long))


def test_group_sum():
    s = torch.arange(8.0)
    assert group_sum(s, 4).tolist() == [6.0, 22.0]
    assert group_sum(s, 1).tolist() == s.tolist()
    with pytest.raises(ValueError, match="divisible"):
        group_sum(torch.arange(7.0), 4)
    with pytest.raises(ValueError, match="group_size"):
        group_sum(s, 0)
