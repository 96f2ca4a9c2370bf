"""Shared 2-D patch tokens: positions (learned / sine-cosine), patchify order, masked MSE."""
import math

import pytest
import torch

from multissl.domains.patches import PatchEmbed, masked_mse, patchify, sincos_2d


def test_sincos_positions_match_a_loop_reference():
    dim, rows, cols = 8, 3, 5
    got = sincos_2d(dim, rows, cols)  # [1 d rows cols]
    assert got.shape == (1, dim, rows, cols)
    q = dim // 4
    for r in range(rows):
        for c in range(cols):
            want = []
            for pos in (r, c):
                angles = [pos / 10000 ** (i / q) for i in range(q)]
                want += [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
            torch.testing.assert_close(got[0, :, r, c], torch.tensor(want), atol=1e-6, rtol=0)


def test_sincos_positions_are_distinct_and_need_dim_divisible_by_4():
    p = sincos_2d(16, 5, 10)[0].flatten(1).T  # [n d]
    assert torch.cdist(p, p).add(torch.eye(50)).min() > 1e-3
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(10, 2, 2)


@pytest.mark.parametrize("pos", ["learned", "sincos"])
def test_patch_embed_shapes_and_other_grids(pos):
    emb = PatchEmbed(1, (8, 20), (4, 5), 16, pos)
    assert emb(torch.zeros(2, 1, 8, 20)).shape == (2, 8, 16)
    assert emb(torch.zeros(2, 1, 12, 10)).shape == (2, 6, 16)  # another grid: interpolated / recomputed
    n_params = sum(p.numel() for p in emb.parameters())
    assert n_params == 16 * 20 + 16 + (16 * 2 * 4 if pos == "learned" else 0)


def test_sincos_patch_embed_adds_the_fixed_positions():
    emb = PatchEmbed(1, (4, 4), (2, 2), 8, "sincos")
    x = torch.randn(1, 1, 4, 4)
    want = (emb.proj(x) + sincos_2d(8, 2, 2)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(emb(x), want)


def test_patchify_order_matches_patch_embed_tokens():
    x = torch.arange(2 * 6 * 8, dtype=torch.float32).view(1, 2, 6, 8)
    t = patchify(x, (3, 4), normalize=False)  # grid 2 x 2
    assert t.shape == (1, 4, 3 * 4 * 2)
    # token 1 = row 0, column 1; features ordered (ph pw c)
    torch.testing.assert_close(t[0, 1], x[0, :, 0:3, 4:8].permute(1, 2, 0).flatten())
    n = patchify(x, (3, 4), normalize=True)
    torch.testing.assert_close(n.mean(-1), torch.zeros(1, 4), atol=1e-5, rtol=0)


def test_masked_mse_matches_a_loop_reference():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    masked = torch.tensor([[0, 2], [1, 5], [3, 4]])
    pred = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)  # every position; only masked ones count
    want = sum(((pred[b, t] - target[b, t]) ** 2).sum() for b in range(3) for t in masked[b].tolist()) / (3 * 2 * 4)
    assert masked_mse(pred, target, masked).item() == pytest.approx(want.item(), rel=1e-12)
