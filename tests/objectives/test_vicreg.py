"""VICReg: each term against explicit loops over samples/dimensions, invariants, and a module smoke test."""
import math

import pytest
import torch

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.objectives.vicreg import VICReg, covariance_term, lse_term, variance_term, vicreg_loss, vicreg_terms


# ---- independent references (pure python loops) ----------------------------------------------------
def _cols(z):
    rows = z.tolist()
    return [[r[j] for r in rows] for j in range(len(rows[0]))]


def ref_variance(z, eps=1e-4):
    cols = _cols(z)
    n = len(cols[0])
    out = 0.0
    for c in cols:
        mu = sum(c) / n
        var = sum((v - mu) ** 2 for v in c) / (n - 1)
        out += max(0.0, 1.0 - math.sqrt(var + eps))
    return out / len(cols)


def ref_covariance(z):
    cols = _cols(z)
    n, d = len(cols[0]), len(cols)
    means = [sum(c) / n for c in cols]
    off = 0.0
    for i in range(d):
        for j in range(d):
            if i == j:
                continue
            cov_ij = sum((cols[i][k] - means[i]) * (cols[j][k] - means[j]) for k in range(n)) / (n - 1)
            off += cov_ij ** 2
    return off / d


def ref_invariance(z_a, z_b):
    a, b = z_a.tolist(), z_b.tolist()
    total = sum((x - y) ** 2 for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    return total / (len(a) * len(a[0]))


def ref_vicreg(z_a, z_b, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=1e-4):
    inv = ref_invariance(z_a, z_b)
    var = (ref_variance(z_a, eps) + ref_variance(z_b, eps)) / 2
    cov = ref_covariance(z_a) + ref_covariance(z_b)
    return sim_coeff * inv + std_coeff * var + cov_coeff * cov


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def hadamard8():
    h = torch.tensor([[1.0]], dtype=torch.float64)
    for _ in range(3):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h  # [8 8], orthogonal columns, column 0 all ones


# ---- term functions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [0.1, 0.7, 3.0])
@pytest.mark.parametrize("n,d", [(2, 3), (6, 4), (10, 5)])
def test_variance_term_matches_reference(n, d, scale):
    z = rand(n, d, seed=n * d, scale=scale)
    assert variance_term(z, 1e-4).item() == pytest.approx(ref_variance(z, 1e-4), rel=1e-10, abs=1e-12)
    assert variance_term(z, 0.3).item() == pytest.approx(ref_variance(z, 0.3), rel=1e-10, abs=1e-12)


def test_variance_term_mixed_dimensions():
    # per-dimension hinge: only the low-variance dimension contributes
    z = torch.cat([rand(9, 1, seed=1, scale=0.05), rand(9, 1, seed=2, scale=20.0)], 1)
    got = variance_term(z, 1e-4).item()
    assert got == pytest.approx(ref_variance(z), rel=1e-10)
    assert 0 < got < 0.5


@pytest.mark.parametrize("n,d", [(2, 2), (5, 3), (12, 6)])
def test_covariance_term_matches_reference(n, d):
    z = rand(n, d, seed=100 + n, scale=2.0)
    assert covariance_term(z).item() == pytest.approx(ref_covariance(z), rel=1e-10, abs=1e-12)


def test_covariance_term_ignores_diagonal_and_mean():
    h = hadamard8()[:, 1:5] * torch.tensor([0.5, 2.0, 3.0, 7.0], dtype=torch.float64)  # orthogonal, any scale
    assert covariance_term(h).item() == pytest.approx(0.0, abs=1e-12)
    assert covariance_term(h + 123.0).item() == pytest.approx(0.0, abs=1e-9)


def test_covariance_term_perfectly_correlated():
    # two identical columns with unbiased variance v: off-diagonal sum = 2 v^2, divided by d = 2
    c = rand(7, 1, seed=3)
    z = torch.cat([c, c], 1)
    v = c.var().item()
    assert covariance_term(z).item() == pytest.approx(2 * v ** 2 / 2, rel=1e-10)


# ---- full loss --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,d", [(3, 2), (8, 4), (11, 6)])
def test_vicreg_loss_matches_reference(n, d):
    z_a, z_b = rand(n, d, seed=n, scale=0.8), rand(n, d, seed=n + 50, scale=0.8)
    assert vicreg_loss(z_a, z_b).item() == pytest.approx(ref_vicreg(z_a, z_b), rel=1e-10)


def test_vicreg_loss_respects_coefficients_and_eps():
    z_a, z_b = rand(6, 4, seed=7, scale=0.5), rand(6, 4, seed=8, scale=0.5)
    kw = dict(sim_coeff=2.0, std_coeff=3.0, cov_coeff=5.0, eps=0.01)
    assert vicreg_loss(z_a, z_b, **kw).item() == pytest.approx(ref_vicreg(z_a, z_b, **kw), rel=1e-10)
    only_inv = vicreg_loss(z_a, z_b, sim_coeff=1.0, std_coeff=0.0, cov_coeff=0.0).item()
    assert only_inv == pytest.approx(ref_invariance(z_a, z_b), rel=1e-10)
    only_cov = vicreg_loss(z_a, z_b, sim_coeff=0.0, std_coeff=0.0, cov_coeff=1.0).item()
    assert only_cov == pytest.approx(ref_covariance(z_a) + ref_covariance(z_b), rel=1e-10)


def test_symmetric_in_views():
    z_a, z_b = rand(7, 5, seed=9), rand(7, 5, seed=10, scale=0.3)
    ab, ba = vicreg_loss(z_a, z_b), vicreg_loss(z_b, z_a)
    assert torch.isfinite(ab)
    assert ab.item() == pytest.approx(ba.item(), rel=1e-12)


@pytest.mark.parametrize("n,d", [(2, 3), (8, 5)])
def test_collapsed_embeddings_give_std_hinge_only(n, d):
    row = rand(1, d, seed=11)
    z = row.expand(n, -1).clone()
    got = vicreg_loss(z, z.clone()).item()
    assert got == pytest.approx(25 * (1 - math.sqrt(1e-4)), abs=1e-10)
    assert got == pytest.approx(24.75, abs=1e-10)


def test_decorrelated_unit_variance_identical_views_near_zero():
    z = hadamard8()[:, 1:6].clone()  # mean-zero, orthogonal columns, unbiased variance 8/7 > 1
    assert ref_variance(z) == 0.0 and ref_covariance(z) == pytest.approx(0.0, abs=1e-12)
    assert variance_term(z).item() == 0.0
    assert vicreg_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-10)


def test_gradients_reach_both_inputs():
    z_a = rand(6, 4, seed=12, scale=0.5).requires_grad_()
    z_b = rand(6, 4, seed=13, scale=0.5).requires_grad_()
    vicreg_loss(z_a, z_b).backward()
    for z in (z_a, z_b):
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


# ---- module -----------------------------------------------------------------------------------------
def tiny_setup():
    torch.manual_seed(0)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    return d, enc, VICReg(enc, d, projector=(32, 16))


def test_module_two_views_matches_reference_on_projections():
    d, enc, obj = tiny_setup()
    captured = []
    obj.projector.register_forward_hook(lambda m, i, o: captured.append(o.detach().double()))
    views = [torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)]
    loss, logs = obj(enc, {"views": views, "y": torch.zeros(8, dtype=torch.long)}, {})
    assert len(captured) == 2
    assert loss.item() == pytest.approx(ref_vicreg(captured[0], captured[1]), rel=1e-4)
    assert logs["rep"].shape == (8, 16)


def test_module_multicrop_smoke_gradient_reaches_encoder():
    d, enc, obj = tiny_setup()
    views = [torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8), torch.randn(8, 1, 4, 4)]
    loss, _ = obj(enc, {"views": views, "y": torch.zeros(8, dtype=torch.long)}, {})
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    assert enc.embed.proj.weight.grad is not None and enc.embed.proj.weight.grad.abs().sum() > 0


# ---- VICReg-exp and VICReg-ctr (Garrido et al. 2023) ----------------------------------------------------------

def ref_lse_dimensions(z, temperature):
    """(1/d) sum_i log sum_{j != i} exp(C_ij / t), C the covariance of the columns, by loops."""
    cols = _cols(z)
    n, d = len(cols[0]), len(cols)
    means = [sum(c) / n for c in cols]
    cov = [[sum((cols[i][k] - means[i]) * (cols[j][k] - means[j]) for k in range(n)) / (n - 1) for j in range(d)]
           for i in range(d)]
    return sum(math.log(sum(math.exp(cov[i][j] / temperature) for j in range(d) if j != i)) for i in range(d)) / d


def ref_ctr_terms(z, temperature, eps=1e-4):
    """VICReg-ctr's terms written over the samples: each embedding's spread over its own dimensions, and the
    log-sum-exp of each embedding's off-diagonal entries in the Gram matrix of the per-embedding-centred rows."""
    rows = z.tolist()
    n, d = len(rows), len(rows[0])
    centred = [[v - sum(r) / d for v in r] for r in rows]
    var = sum(max(0.0, 1.0 - math.sqrt(sum(v * v for v in r) / (d - 1) + eps)) for r in centred) / n
    gram = [[sum(a * b for a, b in zip(ri, rj)) / (d - 1) for rj in centred] for ri in centred]
    lse = sum(math.log(sum(math.exp(gram[i][j] / temperature) for j in range(n) if j != i)) for i in range(n)) / n
    return var, lse


@pytest.mark.parametrize("n,d", [(5, 3), (16, 8), (4, 12)])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_lse_term_matches_reference(n, d, temperature):
    z = rand(n, d, seed=n + d)
    assert lse_term(z, temperature).item() == pytest.approx(ref_lse_dimensions(z, temperature), rel=1e-9)


@pytest.mark.parametrize("n,d", [(6, 4), (10, 16)])
def test_vicreg_exp_and_ctr_losses_match_references(n, d):
    z_a, z_b = rand(n, d, seed=1), rand(n, d, seed=2, scale=0.7)
    inv = ref_invariance(z_a, z_b)
    exp_loss = vicreg_loss(z_a, z_b, covariance="lse", temperature=0.2).item()
    want = 25 * inv + 25 * (ref_variance(z_a) + ref_variance(z_b)) / 2 + \
        ref_lse_dimensions(z_a, 0.2) + ref_lse_dimensions(z_b, 0.2)
    assert exp_loss == pytest.approx(want, rel=1e-9)
    (var_a, lse_a), (var_b, lse_b) = ref_ctr_terms(z_a, 0.2), ref_ctr_terms(z_b, 0.2)
    terms = vicreg_terms(z_a, z_b, covariance="lse", temperature=0.2, axis="samples")
    assert terms["inv"].item() == pytest.approx(inv, rel=1e-12)  # the invariance term does not care which way round
    assert terms["var"].item() == pytest.approx((var_a + var_b) / 2, rel=1e-9)
    assert terms["cov"].item() == pytest.approx(lse_a + lse_b, rel=1e-9)


def test_vicreg_ctr_is_sample_contrastive_the_plain_form_is_not():
    """Make two embeddings identical: VICReg-ctr's log-sum-exp over the Gram matrix charges for the pair (a
    sample-contrastive term), VICReg-exp's over the covariance barely moves."""
    z = rand(12, 6, seed=4)
    twin = z.clone()
    twin[1] = z[0]
    exp_gap = lse_term(twin, 0.1) - lse_term(z, 0.1)
    ctr_gap = lse_term(twin.T, 0.1) - lse_term(z.T, 0.1)
    assert ctr_gap > 0.1 and abs(exp_gap) < ctr_gap


def test_module_rejects_an_unknown_form():
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    with pytest.raises(UserError, match="objective.covariance"):
        VICReg(Encoder(d, dim=16, depth=1, heads=2), d, covariance="cube")
