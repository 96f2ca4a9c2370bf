"""SimSiam: negative cosine against numpy, stop-gradient, the heads' structure, the collapse monitor, and the
module's symmetric loss."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.objectives.simsiam import SimSiam, normalized_std, simsiam_loss


def reference_d(p, z):
    """The paper's D(p, z) = -<p/|p|, z/|z|>, averaged over rows, in numpy."""
    p, z = np.asarray(p, dtype=np.float64), np.asarray(z, dtype=np.float64)
    return float(np.mean([-np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(p, z)]))


def reference_std(z):
    """Per-column (unbiased) std of the l2-normalised rows, averaged over columns, by loops."""
    rows = [[v / math.sqrt(sum(x * x for x in r)) for v in r] for r in z.tolist()]
    n, d = len(rows), len(rows[0])
    out = 0.0
    for j in range(d):
        col = [r[j] for r in rows]
        mu = sum(col) / n
        out += math.sqrt(sum((c - mu) ** 2 for c in col) / (n - 1))
    return out / d


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def tiny_setup(**kw):
    torch.manual_seed(0)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    return d, enc, SimSiam(enc, d, projector=(32, 32, 16), predictor=(8, 16), **kw)


def tiny_batch(n=8, local=False):
    views = [torch.randn(n, 1, 8, 8), torch.randn(n, 1, 8, 8)] + ([torch.randn(n, 1, 4, 4)] if local else [])
    return {"views": views, "y": torch.zeros(n, dtype=torch.long)}


# ---- loss ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,dim", [(1, 2), (5, 4), (9, 7)])
def test_loss_matches_numpy_reference(n, dim):
    p, z = rand(n, dim, seed=n), rand(n, dim, seed=n + 100)
    assert simsiam_loss(p, z).item() == pytest.approx(reference_d(p.numpy(), z.numpy()), rel=1e-12, abs=1e-12)


def test_aligned_opposite_and_orthogonal():
    z = rand(6, 5, seed=1)
    scale = torch.rand(6, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 5 + 0.1
    assert simsiam_loss(z * scale, z).item() == pytest.approx(-1.0, abs=1e-12)
    assert simsiam_loss(-z, 3 * z).item() == pytest.approx(1.0, abs=1e-12)
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    assert simsiam_loss(p, torch.tensor([[0.0, 3.0], [-1.0, 0.0]], dtype=torch.float64)).item() == pytest.approx(0.0)


def test_stop_gradient_on_the_target():
    p = rand(4, 3, seed=3).requires_grad_()
    z = rand(4, 3, seed=4).requires_grad_()
    simsiam_loss(p, z).backward()
    assert z.grad is None
    assert p.grad is not None and p.grad.abs().sum() > 0


# ---- collapse monitor ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,d", [(3, 2), (10, 6)])
def test_normalized_std_matches_reference(n, d):
    z = rand(n, d, seed=10 + n)
    assert normalized_std(z).item() == pytest.approx(reference_std(z), rel=1e-5)


def test_normalized_std_zero_when_collapsed_and_near_inverse_sqrt_d_when_spread():
    assert normalized_std(rand(1, 8, seed=5).expand(16, -1)).item() == pytest.approx(0.0, abs=1e-6)
    assert normalized_std(rand(4000, 64, seed=6)).item() == pytest.approx(1 / math.sqrt(64), rel=0.02)


# ---- heads --------------------------------------------------------------------------------------------------
def test_projector_has_bn_on_every_layer_and_a_bottleneck_predictor():
    _, _, obj = tiny_setup()
    kinds = [type(m) for m in obj.projector]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear, nn.BatchNorm1d]
    assert obj.projector[-2].bias is None and not obj.projector[-1].affine  # the output BN standardises
    assert [type(m) for m in obj.predictor] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert obj.predictor[0].out_features == 8 and obj.predictor[-1].out_features == 16
    out = obj.projector(torch.randn(32, 16))  # training mode: each output column standardised over the batch
    torch.testing.assert_close(out.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(16), atol=1e-3, rtol=0)


def test_predictor_lr_scale_only_on_the_predictor():
    _, enc, obj = tiny_setup(predictor_lr=7.0)
    assert all(p.lr_scale == 7.0 for p in obj.predictor.parameters())
    assert not any(hasattr(p, "lr_scale") for p in [*obj.projector.parameters(), *enc.parameters()])


def test_predictor_width_must_match_projector():
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    with pytest.raises(ValueError, match="predictor must end at"):
        SimSiam(Encoder(d, dim=16, depth=1, heads=2), d, projector=(32, 16), predictor=(8, 12))


# ---- module -------------------------------------------------------------------------------------------------
def test_module_loss_is_the_symmetric_half_sum():
    _, enc, obj = tiny_setup()
    z, p = [], []
    obj.projector.register_forward_hook(lambda m, i, o: z.append(o.detach().double()))
    obj.predictor.register_forward_hook(lambda m, i, o: p.append(o.detach().double()))
    loss, logs = obj(enc, tiny_batch(), {"step": 0})
    assert len(z) == len(p) == 2
    ref = reference_d(p[0], z[1]) / 2 + reference_d(p[1], z[0]) / 2
    assert loss.item() == pytest.approx(ref, rel=1e-5, abs=1e-6)
    assert logs["cos"].item() == pytest.approx(-ref, rel=1e-5, abs=1e-6)
    assert logs["std"].item() == pytest.approx(reference_std(z[0]), rel=1e-4)
    assert logs["rep"].shape == (8, 16) and not logs["rep"].requires_grad


def test_module_gradients_reach_every_head_and_the_encoder():
    _, enc, obj = tiny_setup()
    loss, _ = obj(enc, tiny_batch(), {"step": 0})
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for m in (enc, obj.projector, obj.predictor):
        assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in m.parameters() if q.requires_grad)
        assert any(q.grad.abs().sum() > 0 for q in m.parameters())


def test_module_multicrop_averages_over_pairs():
    _, enc, obj = tiny_setup()
    z, p = [], []
    obj.projector.register_forward_hook(lambda m, i, o: z.append(o.detach().double()))
    obj.predictor.register_forward_hook(lambda m, i, o: p.append(o.detach().double()))
    loss, _ = obj(enc, tiny_batch(local=True), {"step": 0})
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # each global view's projection is the target of every other view
    ref = sum(reference_d(p[j], z[i]) for i, j in pairs) / len(pairs)
    assert loss.item() == pytest.approx(ref, rel=1e-5, abs=1e-6)
    loss.backward()
    assert enc.embed.proj.weight.grad.abs().sum() > 0
