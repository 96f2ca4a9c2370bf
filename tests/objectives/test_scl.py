"""Spectral contrastive loss: the loss and its two terms against plain loops (the official norm bound included),
invariants (symmetry, collapsed and orthonormal embeddings, scale beyond the bound), and module smoke tests."""
import math

import pytest
import torch
from torch import nn

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.objectives.scl import SCL, clip_norm, scl_loss, scl_terms


# ---- independent reference (pure python loops) ----------------------------------------------------------------
def ref_clip(rows, mu):
    out = []
    for r in rows:
        norm = math.sqrt(sum(v * v for v in r))
        out.append(list(r) if norm < math.sqrt(mu) else [v / norm * math.sqrt(mu) for v in r])
    return out


def ref_terms(z_a, z_b, mu=1.0):
    """-2 mean_i a_i.b_i and mean over i != j of (a_i.b_j)^2, both divided by mu, after the norm bound."""
    a, b = ref_clip(z_a.tolist(), mu), ref_clip(z_b.tolist(), mu)
    n = len(a)

    def dot(u, v):
        return sum(x * y for x, y in zip(u, v))
    pos = -2 * sum(dot(a[i], b[i]) for i in range(n)) / n
    neg = sum(dot(a[i], b[j]) ** 2 for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return pos / mu, neg / mu


def ref_scl(z_a, z_b, mu=1.0):
    return sum(ref_terms(z_a, z_b, mu))


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


# ---- the loss ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mu", [1.0, 10.0, 0.3])
@pytest.mark.parametrize("scale", [0.05, 0.4, 3.0])  # below, around and beyond the norm bound
@pytest.mark.parametrize("n,d", [(2, 3), (7, 4), (12, 9)])
def test_loss_and_terms_match_reference(n, d, scale, mu):
    z_a, z_b = rand(n, d, seed=n * d, scale=scale), rand(n, d, seed=n * d + 1, scale=scale)
    pos, neg = ref_terms(z_a, z_b, mu)
    t = scl_terms(z_a, z_b, mu)
    assert t["pos"].item() == pytest.approx(pos, rel=1e-10, abs=1e-12)
    assert t["neg"].item() == pytest.approx(neg, rel=1e-10, abs=1e-12)
    assert scl_loss(z_a, z_b, mu).item() == pytest.approx(pos + neg, rel=1e-10, abs=1e-12)


def test_rows_of_mixed_norms_and_the_default_bound():
    # rows on both sides of sqrt(mu): only the long ones are rescaled; mu defaults to the official CIFAR 1
    z_a = rand(6, 5, seed=3) * torch.tensor([[0.01], [0.1], [0.3], [2.0], [5.0], [0.2]], dtype=torch.float64)
    z_b = rand(6, 5, seed=4) * 0.3
    assert scl_loss(z_a, z_b).item() == pytest.approx(ref_scl(z_a, z_b, 1.0), rel=1e-10)
    clipped = clip_norm(z_a, 2.0).norm(dim=1)
    kept = z_a.norm(dim=1) < math.sqrt(2.0)
    assert torch.allclose(clipped[kept], z_a.norm(dim=1)[kept], rtol=0, atol=1e-15)
    assert torch.allclose(clipped[~kept], torch.full_like(clipped[~kept], math.sqrt(2.0)), rtol=1e-12, atol=0)


def test_symmetric_in_views():
    z_a, z_b = rand(9, 6, seed=5, scale=0.3), rand(9, 6, seed=6, scale=2.0)
    assert scl_loss(z_a, z_b).item() == pytest.approx(scl_loss(z_b, z_a).item(), rel=1e-12)


@pytest.mark.parametrize("mu", [1.0, 10.0])
@pytest.mark.parametrize("n", [2, 8])
def test_collapsed_embeddings(n, mu):
    """Every row the same u, |u|^2 = m: pos = -2m, neg = m^2 (divided by mu), m capped at mu."""
    u = rand(1, 4, seed=7)
    for norm in (0.5 * math.sqrt(mu), 3 * math.sqrt(mu)):
        z = (u / u.norm() * norm).expand(n, -1).clone()
        m = min(norm ** 2, mu)
        t = scl_terms(z, z.clone(), mu)
        assert t["pos"].item() == pytest.approx(-2 * m / mu, rel=1e-12)
        assert t["neg"].item() == pytest.approx(m * m / mu, rel=1e-12)
    # beyond the bound a collapsed batch scores mu - 2: -1 at the default mu
    assert scl_loss(3 * u.expand(n, -1), 3 * u.expand(n, -1), 1.0).item() == pytest.approx(-1.0, rel=1e-12)


def test_orthonormal_identical_views_reach_minus_two():
    z = torch.eye(6, dtype=torch.float64)[:4] * 7.0  # rescaled to unit rows, mutually orthogonal
    t = scl_terms(z, z.clone())
    assert t["pos"].item() == pytest.approx(-2.0, rel=1e-12) and t["neg"].item() == pytest.approx(0.0, abs=1e-15)


def test_scale_beyond_the_bound_changes_nothing():
    z_a, z_b = rand(8, 5, seed=8, scale=2.0), rand(8, 5, seed=9, scale=2.0)  # every row longer than 1
    assert (z_a.norm(dim=1) > 1).all() and (z_b.norm(dim=1) > 1).all()
    s = torch.rand(8, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 4 + 1
    assert scl_loss(z_a * s, z_b / s * 3).item() == pytest.approx(scl_loss(z_a, z_b).item(), rel=1e-12)


def test_gradients_reach_both_inputs():
    z_a = rand(6, 4, seed=10, scale=0.3).requires_grad_()
    z_b = rand(6, 4, seed=11, scale=0.3).requires_grad_()
    scl_loss(z_a, z_b).backward()
    for z in (z_a, z_b):
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


# ---- the module ------------------------------------------------------------------------------------------------
def tiny_setup(**kw):
    torch.manual_seed(0)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    return d, enc, SCL(enc, d, **({"projector": (32, 8)} | kw))


def tiny_batch(n=8, local=False, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 1, 8, 8, generator=g, dtype=dtype) for _ in range(2)]
    if local:
        views.append(torch.randn(n, 1, 4, 4, generator=g, dtype=dtype))
    return {"views": views, "y": torch.zeros(n, dtype=torch.long)}


def test_projector_is_the_officials():
    _, _, obj = tiny_setup()
    linear, last = obj.projector[-2], obj.projector[-1]
    assert isinstance(linear, nn.Linear) and linear.bias is None  # the BatchNorm after it cancels a bias
    assert isinstance(last, nn.BatchNorm1d) and last.affine and last.num_features == 8
    assert not any(isinstance(m, nn.ReLU) for m in list(obj.projector)[-2:])  # "norelu": no ReLU on the output
    assert sum(isinstance(m, nn.BatchNorm1d) for m in obj.projector) == 2


@pytest.mark.parametrize("local", [False, True])
def test_module_matches_reference_over_view_pairs(local):
    _, enc, obj = tiny_setup(mu=2.0)
    enc.double(), obj.double()
    z = []
    obj.projector.register_forward_hook(lambda m, i, o: z.append(o.detach().clone()))
    loss, logs = obj(enc, tiny_batch(local=local, dtype=torch.float64), {"step": 0})
    pairs = [(0, 1), (0, 2), (1, 2)] if local else [(0, 1)]  # each unordered pair with a global view, once
    terms = [ref_terms(z[i], z[j], 2.0) for i, j in pairs]
    assert loss.item() == pytest.approx(sum(p + q for p, q in terms) / len(pairs), rel=1e-10)
    assert logs["pos"].item() == pytest.approx(sum(p for p, _ in terms) / len(pairs), rel=1e-10)
    assert logs["neg"].item() == pytest.approx(sum(q for _, q in terms) / len(pairs), rel=1e-10)


def test_module_smoke_gradients_reach_encoder_and_heads():
    _, enc, obj = tiny_setup()
    loss, logs = obj(enc, tiny_batch(), {"step": 0})
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs["rep"].shape == (8, 16) and not logs["rep"].requires_grad
    assert set(logs) == {"rep", "pos", "neg"}
    loss.backward()
    for name, p in [*enc.named_parameters(), *obj.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert obj.batch_statistics and obj.collapse_hint
