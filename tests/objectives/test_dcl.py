"""DCL / DCLW: the loss against per-anchor loops, its relation to NT-Xent, the weights, and the module."""
import math

import pytest
import torch

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.objectives.dcl import DCL, dcl_loss, vmf_weights
from multissl.objectives.simclr import nt_xent_loss


def _cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def reference_weights(z_a, z_b, sigma):
    """The paper's w_i = 2 - exp(cos_i / sigma) / mean_k exp(cos_k / sigma), by loops."""
    e = [math.exp(_cos(a, b) / sigma) for a, b in zip(z_a.tolist(), z_b.tolist())]
    return [2 - x / (sum(e) / len(e)) for x in e]


def reference_dcl(z_a, z_b, temperature, weighted=False, sigma=0.5):
    """Eq. 6 of the paper, by loops over the 2N anchors: -w cos(i, i')/t + log sum_{k not i, not i'} exp(cos/t)."""
    z = z_a.tolist() + z_b.tolist()
    n = len(z) // 2
    w = reference_weights(z_a, z_b, sigma) if weighted else [1.0] * n
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        neg = sum(math.exp(_cos(z[i], z[k]) / temperature) for k in range(2 * n) if k not in (i, pos))
        total += -w[i % n] * _cos(z[i], z[pos]) / temperature + math.log(neg)
    return total / (2 * n)


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


# ---- loss ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("n,dim", [(2, 3), (4, 5), (7, 2)])
def test_matches_reference(n, dim, temperature, weighted):
    z_a, z_b = rand(n, dim, seed=n * 10 + dim), rand(n, dim, seed=n * 10 + dim + 1)
    got = dcl_loss(z_a, z_b, temperature, weighted=weighted, sigma=0.3).item()
    assert got == pytest.approx(reference_dcl(z_a, z_b, temperature, weighted, 0.3), rel=1e-10, abs=1e-12)


def test_defaults_are_dcl_at_temperature_0_1():
    z_a, z_b = rand(5, 4, seed=1), rand(5, 4, seed=2)
    assert dcl_loss(z_a, z_b).item() == pytest.approx(reference_dcl(z_a, z_b, 0.1), rel=1e-10)


def test_removing_the_positive_from_the_denominator_is_the_only_change_from_nt_xent():
    # NT-Xent - DCL = mean over anchors of log(1 + exp(pos / t) / sum of negatives)
    z_a, z_b, t = rand(6, 4, seed=3), rand(6, 4, seed=4), 0.2
    z = torch.nn.functional.normalize(torch.cat([z_a, z_b]), dim=1)
    sim = (z @ z.T / t).exp()
    pos = torch.cat([torch.diagonal(sim, 6), torch.diagonal(sim, -6)])
    gap = torch.log1p(pos / (sim.sum(1) - sim.diagonal() - pos)).mean()
    assert (nt_xent_loss(z_a, z_b, t) - dcl_loss(z_a, z_b, t)).item() == pytest.approx(gap.item(), rel=1e-10)


@pytest.mark.parametrize("weighted", [False, True])
def test_symmetric_in_views_and_invariant_to_row_scale(weighted):
    z_a, z_b = rand(7, 6, seed=5), rand(7, 6, seed=6)
    s = torch.rand(7, 1, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 10 + 0.01
    ab = dcl_loss(z_a, z_b, 0.2, weighted=weighted)
    assert ab.item() == pytest.approx(dcl_loss(z_b, z_a, 0.2, weighted=weighted).item(), rel=1e-12)
    assert ab.item() == pytest.approx(dcl_loss(z_a * s, z_b, 0.2, weighted=weighted).item(), rel=1e-10)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n", [2, 5])
def test_collapsed_embeddings_give_log_2n_minus_2(n, weighted):
    z = rand(1, 3, seed=8).expand(n, -1).clone()
    assert dcl_loss(z, z.clone(), 0.1, weighted=weighted).item() == pytest.approx(math.log(2 * n - 2), abs=1e-10)


def test_weights_match_reference_average_one_and_favour_hard_positives():
    z_a, z_b = rand(6, 4, seed=9), rand(6, 4, seed=10)
    a, b = (torch.nn.functional.normalize(z, dim=1) for z in (z_a, z_b))
    w = vmf_weights(a, b, 0.5)
    assert w.tolist() == pytest.approx(reference_weights(z_a, z_b, 0.5), rel=1e-10)
    assert w.mean().item() == pytest.approx(1.0, rel=1e-12)
    cos = (a * b).sum(1)
    assert torch.equal(w.argmax(), cos.argmin()) and torch.equal(w.argmin(), cos.argmax())


def test_no_gradient_through_the_weights():
    z_a, z_b = rand(5, 3, seed=11).requires_grad_(), rand(5, 3, seed=12).requires_grad_()
    dcl_loss(z_a, z_b, 0.2, weighted=True, sigma=0.5).backward()
    # the same loss with the weights as constants
    w = torch.tensor(reference_weights(z_a.detach(), z_b.detach(), 0.5), dtype=torch.float64).repeat(2)
    ra, rb = z_a.detach().clone().requires_grad_(), z_b.detach().clone().requires_grad_()
    z = torch.nn.functional.normalize(torch.cat([ra, rb]), dim=1)
    sim = z @ z.T / 0.2
    pos = torch.cat([torch.diagonal(sim, 5), torch.diagonal(sim, -5)])
    own = torch.arange(10) % 5
    neg = torch.logsumexp(sim.masked_fill(own[:, None] == own[None, :], float("-inf")), 1)
    (neg - w * pos).mean().backward()
    torch.testing.assert_close(z_a.grad, ra.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(z_b.grad, rb.grad, rtol=1e-10, atol=1e-12)


# ---- module -------------------------------------------------------------------------------------------------
def tiny_setup(**kw):
    torch.manual_seed(0)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    return enc, DCL(enc, d, projector=(32, 16), **kw)


@pytest.mark.parametrize("weighted", [False, True])
def test_module_two_views_matches_reference_on_projections(weighted):
    enc, obj = tiny_setup(temperature=0.2, weighted=weighted)
    z = []
    obj.projector.register_forward_hook(lambda m, i, o: z.append(o.detach().double()))
    views = [torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)]
    loss, logs = obj(enc, {"views": views, "y": torch.zeros(6, dtype=torch.long)}, {})
    assert len(z) == 2
    ref = (reference_dcl(z[0], z[1], 0.2, weighted) + reference_dcl(z[1], z[0], 0.2, weighted)) / 2
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    pos_cos = sum(_cos(a, b) for a, b in zip(z[0].tolist(), z[1].tolist())) / 6
    assert logs["pos_cos"].item() == pytest.approx(pos_cos, rel=1e-5)
    assert logs["rep"].shape == (6, 16) and not logs["rep"].requires_grad


def test_module_multicrop_gradient_reaches_encoder_and_projector():
    enc, obj = tiny_setup()
    views = [torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8), torch.randn(8, 1, 4, 4)]
    loss, _ = obj(enc, {"views": views, "y": torch.zeros(8, dtype=torch.long)}, {})
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert enc.embed.proj.weight.grad is not None and enc.embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.projector.parameters())
