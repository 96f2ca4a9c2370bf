"""Barlow Twins: the cross-correlation and both terms against loops, invariants (identity, collapse, symmetry,
affine invariance), and the module."""
import math

import pytest
import torch
from torch import nn

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.objectives.barlow import Barlow, barlow_loss, barlow_terms, cross_correlation


def ref_standardize(z, eps):
    """Columns to mean 0, variance 1 (biased, + eps), as BatchNorm without affine; lists of columns."""
    rows = z.tolist()
    n = len(rows)
    cols = []
    for j in range(len(rows[0])):
        c = [r[j] for r in rows]
        mu = sum(c) / n
        sd = math.sqrt(sum((v - mu) ** 2 for v in c) / n + eps)
        cols.append([(v - mu) / sd for v in c])
    return cols


def ref_c(z_a, z_b, eps=1e-5):
    a, b = ref_standardize(z_a, eps), ref_standardize(z_b, eps)
    n = len(a[0])
    return [[sum(x * y for x, y in zip(ai, bj)) / n for bj in b] for ai in a]


def ref_barlow(z_a, z_b, lambd=5e-3, eps=1e-5):
    c = ref_c(z_a, z_b, eps)
    d = len(c)
    on = sum((1 - c[i][i]) ** 2 for i in range(d))
    off = sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on, off, on + lambd * off


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


# ---- loss ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,d", [(2, 2), (6, 3), (11, 5)])
def test_cross_correlation_matches_reference(n, d):
    z_a, z_b = rand(n, d, seed=n, scale=2.0) + 1, rand(n, d, seed=n + 1, scale=0.5)
    torch.testing.assert_close(cross_correlation(z_a, z_b), torch.tensor(ref_c(z_a, z_b), dtype=torch.float64),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lambd", [5e-3, 0.1])
@pytest.mark.parametrize("n,d", [(3, 2), (8, 4), (12, 7)])
def test_terms_and_loss_match_reference(n, d, lambd):
    z_a, z_b = rand(n, d, seed=10 * n + d), rand(n, d, seed=10 * n + d + 1, scale=3.0)
    on, off, loss = ref_barlow(z_a, z_b, lambd)
    t = barlow_terms(z_a, z_b)
    assert t["on_diag"].item() == pytest.approx(on, rel=1e-10)
    assert t["off_diag"].item() == pytest.approx(off, rel=1e-10)
    assert barlow_loss(z_a, z_b, lambd).item() == pytest.approx(loss, rel=1e-10)


def test_default_lambda_is_the_papers():
    z_a, z_b = rand(6, 4, seed=1), rand(6, 4, seed=2)
    assert barlow_loss(z_a, z_b).item() == pytest.approx(ref_barlow(z_a, z_b, 5e-3)[2], rel=1e-10)


def test_identical_decorrelated_views_give_zero():
    h = torch.tensor([[1.0]], dtype=torch.float64)
    for _ in range(3):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    z = h[:, 1:6] * torch.tensor([0.5, 2.0, 3.0, 7.0, 1.0], dtype=torch.float64) + 4  # orthogonal columns
    assert barlow_loss(z, z.clone(), eps=0.0).item() == pytest.approx(0.0, abs=1e-12)
    t = barlow_terms(z, z.clone())  # eps keeps the diagonal just under 1
    assert t["off_diag"].item() == pytest.approx(0.0, abs=1e-12) and 0 < t["on_diag"].item() < 1e-8


@pytest.mark.parametrize("n,d", [(4, 3), (9, 8)])
def test_collapsed_embeddings_give_d(n, d):
    z = rand(1, d, seed=3).expand(n, -1).clone()
    assert barlow_loss(z, z.clone()).item() == pytest.approx(d, abs=1e-12)  # C = 0: every diagonal term is 1


def test_symmetric_in_views_and_invariant_to_per_dimension_affine_maps():
    z_a, z_b = rand(10, 4, seed=4), rand(10, 4, seed=5)
    loss = barlow_loss(z_a, z_b, eps=0.0).item()
    assert barlow_loss(z_b, z_a, eps=0.0).item() == pytest.approx(loss, rel=1e-12)
    scale, shift = rand(1, 4, seed=6).abs() + 0.1, rand(1, 4, seed=7) * 10
    assert barlow_loss(z_a * scale + shift, z_b, eps=0.0).item() == pytest.approx(loss, rel=1e-9)


def test_gradients_reach_both_inputs():
    z_a, z_b = rand(6, 4, seed=8).requires_grad_(), rand(6, 4, seed=9).requires_grad_()
    barlow_loss(z_a, z_b).backward()
    for z in (z_a, z_b):
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
        # standardisation makes the loss blind to a shift of a column: its gradient sums to 0 over the batch
        torch.testing.assert_close(z.grad.sum(0), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)


# ---- module -------------------------------------------------------------------------------------------------
def tiny_setup():
    torch.manual_seed(0)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    return enc, Barlow(enc, d, projector=(32, 32, 24), lambd=0.01)


def test_projector_three_layers_bn_and_no_output_bias():
    _, obj = tiny_setup()
    assert [type(m) for m in obj.projector] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert obj.projector[-1].bias is None and obj.projector[-1].out_features == 24


def test_module_matches_reference_on_projections():
    enc, obj = tiny_setup()
    z = []
    obj.projector.register_forward_hook(lambda m, i, o: z.append(o.detach().double()))
    views = [torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)]
    loss, logs = obj(enc, {"views": views, "y": torch.zeros(8, dtype=torch.long)}, {})
    assert len(z) == 2
    on, off, ref = ref_barlow(z[0], z[1], 0.01)
    assert loss.item() == pytest.approx(ref, rel=1e-4)
    assert logs["on_diag"].item() == pytest.approx(on, rel=1e-4)
    assert logs["off_diag"].item() == pytest.approx(off, rel=1e-4)
    assert logs["rep"].shape == (8, 16) and not logs["rep"].requires_grad


def test_module_multicrop_gradient_reaches_encoder_and_projector():
    enc, obj = tiny_setup()
    views = [torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8), torch.randn(8, 1, 4, 4)]
    loss, _ = obj(enc, {"views": views, "y": torch.zeros(8, dtype=torch.long)}, {})
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert enc.embed.proj.weight.grad is not None and enc.embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.projector.parameters())
