"""Patch tokens on 1-D, 2-D and 3-D grids: sine-cosine positions, the embedding and the patchify target
against loops written here, learned positions on other grids, the masked MSE with padded index tensors."""
import itertools
import math

import pytest
import torch

from multissl.domains.patches import PatchEmbed, axis_pairs, masked_mse, patchify, positions, sincos, sincos_2d, \
    unpatchify


def loop_sincos(dim, grid):
    """Per position: for each axis in turn, sin then cos of pos / 10000^(i/q) for its q = axis_pairs pairs."""
    out = torch.zeros(dim, *grid)
    for idx in itertools.product(*(range(n) for n in grid)):
        want = []
        for pos, q in zip(idx, axis_pairs(dim, len(grid))):
            angles = [pos / 10000 ** (i / q) for i in range(q)]
            want += [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
        out[(slice(None), *idx)] = torch.tensor(want)
    return out[None]


@pytest.mark.parametrize("dim, grid", [(8, (7,)), (8, (3, 5)), (12, (2, 3, 4)), (16, (2, 3, 4)), (10, (3, 3))])
def test_sincos_positions_match_a_loop_reference(dim, grid):
    got = sincos(dim, grid)
    assert got.shape == (1, dim, *grid)
    torch.testing.assert_close(got, loop_sincos(dim, grid), atol=1e-6, rtol=0)


def test_the_2d_table_is_maes_and_the_channels_are_shared_out_evenly():
    assert axis_pairs(8, 2) == [2, 2] and axis_pairs(64, 3) == [11, 11, 10] and axis_pairs(6, 1) == [3]
    q = 2  # MAE: dim / 4 frequencies per axis, rows first
    want = []
    for pos in (1, 4):
        angles = [pos / 10000 ** (i / q) for i in range(q)]
        want += [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
    torch.testing.assert_close(sincos_2d(8, 3, 5)[0, :, 1, 4], torch.tensor(want), atol=1e-6, rtol=0)


def test_sincos_positions_are_distinct_and_need_an_even_dim():
    for grid in ((50,), (5, 10), (2, 5, 5)):
        p = sincos(18, grid)[0].flatten(1).T  # [n d]
        assert torch.cdist(p, p).add(torch.eye(50)).min() > 1e-3
    with pytest.raises(ValueError, match="even"):
        sincos(9, (2, 2))


def hand_tokens(emb, x):
    """Each token = sum over channels and patch offsets of weight * pixel + bias (+ its position), looped."""
    w, bias, p = emb.proj.weight, emb.proj.bias, emb.patch  # w [d c *p]
    grid = tuple(s // q for s, q in zip(x.shape[2:], p))
    pos = positions(emb.pos, torch.zeros(1, w.shape[0], *grid))[0]
    out = []
    for cell in itertools.product(*(range(g) for g in grid)):
        window = x[(slice(None), slice(None), *(slice(c * q, (c + 1) * q) for c, q in zip(cell, p)))]  # [b c *p]
        out.append(torch.einsum("bc...,dc...->bd", window, w) + bias + pos[(slice(None), *cell)])
    return torch.stack(out, 1)  # [b n d], row-major over the grid


@pytest.mark.parametrize("pos", ["learned", "sincos"])
@pytest.mark.parametrize("size, patch", [((12,), (3,)), ((8, 6), (4, 2)), ((4, 6, 8), (2, 3, 4))])
def test_patch_embed_matches_a_hand_computation_in_1d_2d_and_3d(size, patch, pos):
    torch.manual_seed(0)
    emb = PatchEmbed(2, size, patch, 12, pos)
    x = torch.randn(3, 2, *size)
    got = emb(x)
    assert got.shape == (3, math.prod(s // q for s, q in zip(size, patch)), 12)
    torch.testing.assert_close(got, hand_tokens(emb, x), atol=1e-5, rtol=1e-5)
    n_params = sum(q.numel() for q in emb.parameters())
    assert n_params == 12 * 2 * math.prod(patch) + 12 + (12 * math.prod(emb.grid) if pos == "learned" else 0)


def test_learned_positions_on_another_grid_interpolate_or_crop():
    emb = PatchEmbed(1, (8, 20), (4, 5), 16)
    assert emb(torch.zeros(2, 1, 12, 10)).shape == (2, 6, 16)  # local crops: the table resized
    seq = PatchEmbed(1, (10,), (2,), 8, fit="crop")
    x = torch.randn(1, 1, 6)  # 3 of the 5 positions
    want = (seq.proj(x) + seq.pos[:, :, :3]).transpose(1, 2)
    torch.testing.assert_close(seq(x), want)
    with pytest.raises(ValueError, match="larger than the position table"):
        seq(torch.randn(1, 1, 12))


def loop_patchify(x, patch):
    """Token by token in row-major grid order, each patch's values ordered (*patch offsets, channel)."""
    grid = tuple(s // q for s, q in zip(x.shape[2:], patch))
    rows = []
    for cell in itertools.product(*(range(g) for g in grid)):
        vals = []
        for off in itertools.product(*(range(q) for q in patch)):
            at = tuple(c * q + o for c, q, o in zip(cell, patch, off))
            vals += [x[:, ch][(slice(None), *at)] for ch in range(x.shape[1])]
        rows.append(torch.stack(vals, -1))
    return torch.stack(rows, 1)


@pytest.mark.parametrize("size, patch", [((12,), (3,)), ((6, 8), (3, 4)), ((4, 6, 8), (2, 3, 4))])
def test_patchify_matches_loops_and_unpatchify_inverts_it(size, patch):
    x = torch.randn(2, 3, *size)
    t = patchify(x, patch, normalize=False)
    torch.testing.assert_close(t, loop_patchify(x, patch), atol=0, rtol=0)
    grid = tuple(s // q for s, q in zip(size, patch))
    assert torch.equal(unpatchify(t, patch, grid), x)
    n = patchify(x, patch, normalize=True)
    torch.testing.assert_close(n.mean(-1), torch.zeros(n.shape[:2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(n.var(-1), torch.ones(n.shape[:2]), atol=1e-3, rtol=1e-3)


def test_patchify_order_matches_patch_embed_tokens():
    """A patch embedding that reads one pixel of each patch gives, per token, that pixel of patchify's row."""
    emb = PatchEmbed(2, (6, 8), (3, 4), 1)
    with torch.no_grad():
        for p in emb.parameters():
            p.zero_()
        emb.proj.weight[0, 1, 2, 3] = 1.0  # channel 1, offset (2, 3)
    x = torch.randn(1, 2, 6, 8)
    tokens = emb(x)[0, :, 0]  # [n]
    t = patchify(x, (3, 4), normalize=False)[0]  # [n (3 4 2)]
    torch.testing.assert_close(tokens, t[:, (2 * 4 + 3) * 2 + 1], atol=1e-6, rtol=0)


def test_masked_mse_matches_a_loop_reference_and_skips_padding():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    pred = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)  # every position; only masked ones count
    masked = torch.tensor([[0, 2], [1, 5], [3, 4]])
    want = sum(((pred[b, t] - target[b, t]) ** 2).sum() for b in range(3) for t in masked[b].tolist()) / (3 * 2 * 4)
    assert masked_mse(pred, target, masked).item() == pytest.approx(want.item(), rel=1e-12)
    padded = torch.tensor([[0, 2, 4], [1, -1, -1], [3, 5, -1]])  # a variable-length batch: -1 = padding
    pairs = [(0, 0), (0, 2), (0, 4), (1, 1), (2, 3), (2, 5)]
    want = sum(((pred[b, t] - target[b, t]) ** 2).sum() for b, t in pairs) / (len(pairs) * 4)
    assert masked_mse(pred, target, padded).item() == pytest.approx(want.item(), rel=1e-12)
