"""RDM (predictor-free SimSiam / BYOL): the spectral filters against numpy's SVD, the loss against a reference, the
degenerate batches, and the module (stop-gradient and teacher forms, the gradient path, branches)."""
import numpy as np
import pytest
import torch

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.objectives.rdm import RDM, online_filter, rdm_loss, target_power

NUMPY_G = {"poly": lambda s, p: s ** p, "log": lambda s, p: np.log(s), "log1": lambda s, p: np.log(1 + s),
           "log1p2": lambda s, p: np.log(1 + s ** 2)}


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("kind", list(NUMPY_G))
@pytest.mark.parametrize("b,d", [(12, 5), (6, 9)])
def test_online_filter_is_u_s_g_s_vt(kind, b, d):
    z = rand(b, d, seed=b + d)
    u, s, vh = np.linalg.svd(z.numpy(), full_matrices=False)
    want = u @ np.diag(s * NUMPY_G[kind](s, 2.0)) @ vh
    np.testing.assert_allclose(online_filter(z, kind, 2.0).numpy(), want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("p", [-1.0, -0.5, 0.0])
def test_target_power_is_u_s_to_1_plus_p_vt_and_minus_one_whitens(p):
    z = rand(10, 4, seed=3)
    u, s, vh = np.linalg.svd(z.numpy(), full_matrices=False)
    np.testing.assert_allclose(target_power(z, p).numpy(), u @ np.diag(s ** (1 + p)) @ vh, rtol=1e-9, atol=1e-10)
    if p == -1.0:  # every singular value 1: the columns are orthonormal
        w = target_power(z, p)
        np.testing.assert_allclose((w.T @ w).numpy(), np.eye(4), atol=1e-10)


def reference_loss(z_online, z_target, kind, power, target_p, form):
    zo, zt = z_online.double().numpy(), z_target.double().numpy()
    if kind != "none":
        u, s, vh = np.linalg.svd(zo, full_matrices=False)
        zo = zo @ (vh.T @ np.diag(NUMPY_G[kind](s, power)) @ vh)
    if target_p is not None:
        u, s, vh = np.linalg.svd(zt, full_matrices=False)
        zt = u @ np.diag(s ** (1 + target_p)) @ vh
    cos = (zo * zt).sum(1) / (np.linalg.norm(zo, axis=1) * np.linalg.norm(zt, axis=1))
    return float((-cos).mean() if form == "simsiam" else (2 - 2 * cos).mean())


@pytest.mark.parametrize("kind,power,target_p,form", [("poly", 2.0, None, "simsiam"), ("log1", 1.0, -0.5, "byol"),
                                                      ("none", 1.0, -0.7, "simsiam"), ("log1p2", 1.0, None, "byol")])
def test_loss_matches_reference(kind, power, target_p, form):
    z_o, z_t = rand(16, 6, seed=1), rand(16, 6, seed=2)
    got = rdm_loss(z_o, z_t, kind, power, target_p, form).item()
    assert got == pytest.approx(reference_loss(z_o, z_t, kind, power, target_p, form), rel=1e-9, abs=1e-12)


def test_gradient_flows_through_the_online_projections_not_the_filter_or_the_target():
    z_o, z_t = rand(8, 4, seed=5).requires_grad_(), rand(8, 4, seed=6).requires_grad_()
    rdm_loss(z_o, z_t, "poly", 2.0, -0.5).backward()
    assert z_t.grad is None and torch.isfinite(z_o.grad).all() and z_o.grad.abs().sum() > 0
    # the filter W is a constant: the gradient is that of -cos(z W, t) with W fixed
    w = torch.from_numpy((lambda u, s, vh: vh.T @ np.diag(s ** 2) @ vh)(*np.linalg.svd(z_o.detach().numpy(),
                                                                                        full_matrices=False)))
    t = target_power(z_t.detach(), -0.5)
    z = z_o.detach().clone().requires_grad_()
    (-torch.nn.functional.cosine_similarity(z @ w, t, dim=-1).mean()).backward()
    torch.testing.assert_close(z_o.grad, z.grad, rtol=1e-9, atol=1e-12)


def test_degenerate_batches_stay_finite():
    rank_one = torch.ones(8, 4, dtype=torch.float64) * torch.arange(1, 9, dtype=torch.float64)[:, None]
    for kind in NUMPY_G:
        assert torch.isfinite(online_filter(rank_one, kind, -1.0)).all(), kind  # zero singular values: weight 0
    assert torch.isfinite(target_power(rank_one, -1.0)).all()
    zero = torch.zeros(8, 4, dtype=torch.float64, requires_grad=True)
    loss = rdm_loss(zero, torch.zeros(8, 4, dtype=torch.float64), "log", 1.0, -0.5)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(zero.grad).all() and zero.grad.abs().max() < 1e-100
    nan = torch.full((8, 4), float("nan"), dtype=torch.float64)  # the engine's non-finite guard skips such a step
    assert not torch.isfinite(rdm_loss(nan, rand(8, 4), "poly", 2.0))


def test_directions_the_batch_does_not_span_get_no_weight():
    """A centred float32 batch narrower than it is wide (a BatchNorm's output) spans B - 1 directions: the whitened
    target is the numpy reference on those alone, and round-off in z (other summation orders on N processes) moves it
    by round-off, not by a whole unit-weight direction."""
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    z = z - z.mean(0)  # [8 16], rank 7
    u, s, vh = np.linalg.svd(z.double().numpy(), full_matrices=False)
    np.testing.assert_allclose(target_power(z, -1.0).double().numpy(), u[:, :7] @ vh[:7], atol=1e-5)
    nudged = z + 1e-7 * torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    nudged = nudged - nudged.mean(0)
    torch.testing.assert_close(target_power(nudged, -1.0), target_power(z, -1.0), rtol=0, atol=1e-4)
    want = u[:, :7] @ np.diag(s[:7] * np.log(s[:7])) @ vh[:7]  # g(s) = log s, -inf-free
    np.testing.assert_allclose(online_filter(z, "log").double().numpy(), want, atol=1e-4)


def test_half_precision_batches_keep_their_directions():
    """Singular values from 1 down to 0.03 of the largest are all real directions, also in bfloat16 (whose
    matrix_rank tolerance, 32 x 2^-7, would drop every one under 0.25)."""
    q1, _ = torch.linalg.qr(rand(32, 8, seed=4))
    q2, _ = torch.linalg.qr(rand(8, 8, seed=5))
    z = q1 @ torch.diag(torch.logspace(0, -1.5, 8, dtype=torch.float64)) @ q2.T  # [32 8]
    w = target_power(z.to(torch.bfloat16), -1.0).double()
    np.testing.assert_allclose((w.T @ w).numpy(), np.eye(8), atol=0.1)  # 8 orthonormal columns: nothing dropped


def tiny_setup(**kw):
    torch.manual_seed(0)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    return d, enc, RDM(enc, d, projector=(32, 16), **kw)


@pytest.mark.parametrize("teacher", [False, True])
def test_module_loss_is_the_symmetrised_reference_and_every_parameter_learns(teacher):
    d, enc, obj = tiny_setup(teacher=teacher, online="poly", target_power=-0.5)  # both filters on
    batch = {"views": [torch.randn(8, 1, 8, 8), torch.randn(8, 1, 8, 8)]}
    loss, logs = obj(enc, batch, {"step": 0, "total_steps": 10, "ema": 0.9})
    with torch.no_grad():
        z = [obj.projector(enc(v)[1]) for v in batch["views"]]
        t = z if not teacher else [obj.teacher.nets[1](obj.teacher.nets[0](v)[1]) for v in batch["views"]]
    form = "byol" if teacher else "simsiam"
    want = (reference_loss(z[0], t[1], "poly", 2.0, -0.5, form) + reference_loss(z[1], t[0], "poly", 2.0, -0.5, form))
    assert loss.item() == pytest.approx(want / 2, abs=2e-5)  # float32 module: z W with W = V S^2 V^T
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [*enc.parameters(), *obj.projector.parameters()]
               if p.requires_grad)
    assert obj.teacher is None or all(p.grad is None for p in obj.teacher.parameters())


def test_module_teacher_follows_its_momentum_and_branches_are_unit_rows():
    d, enc, obj = tiny_setup(teacher=True, momentum=0.6)
    before = [t.detach().clone() for t in obj.teacher.nets[0].parameters()]
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(1.0)
    obj.after_step(enc, {"step": 50, "total_steps": 100, "ema": 0.1})  # 0.8 half way, whatever the engine's ema
    for t, old, s in zip(obj.teacher.nets[0].parameters(), before, enc.parameters()):
        torch.testing.assert_close(t, 0.8 * old + 0.2 * s)
    online, target = obj.eval().branches(enc.eval(), {"views": [torch.randn(10, 1, 8, 8)]})
    assert online.shape == target.shape == (10, 16)
    torch.testing.assert_close(online.norm(dim=1), torch.ones(10))
    torch.testing.assert_close(target.norm(dim=1), torch.ones(10))


def test_module_rejects_an_unknown_filter():
    with pytest.raises(UserError, match="objective.online"):
        tiny_setup(online="cube")
