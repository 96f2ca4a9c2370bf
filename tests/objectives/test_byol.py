"""BYOL: 2 - 2cos loss against numpy, stop-gradient, the symmetric module loss, and the EMA teacher."""
import numpy as np
import pytest
import torch

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.objectives.byol import BYOL, byol_loss


def reference_byol(p, z):
    """Independent reference in numpy: mean over rows of 2 - 2 * <p, z> / (|p| |z|)."""
    p, z = np.asarray(p, dtype=np.float64), np.asarray(z, dtype=np.float64)
    vals = []
    for pi, zi in zip(p, z):
        vals.append(2.0 - 2.0 * float(np.dot(pi, zi)) / (np.linalg.norm(pi) * np.linalg.norm(zi)))
    return float(np.mean(vals))


def tiny_setup(seed=0):
    torch.manual_seed(seed)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    obj = BYOL(enc, d, projector=(32, 16), predictor=(32, 16))
    return d, enc, obj


def tiny_batch(n=8, local=False):
    views = [torch.randn(n, 1, 8, 8), torch.randn(n, 1, 8, 8)]
    if local:
        views.append(torch.randn(n, 1, 4, 4))
    return {"views": views, "y": torch.zeros(n, dtype=torch.long)}


@pytest.mark.parametrize("n,dim", [(1, 2), (5, 4), (9, 7)])
def test_matches_numpy_reference(n, dim):
    g = torch.Generator().manual_seed(n + dim)
    p = torch.randn(n, dim, generator=g, dtype=torch.float64)
    z = torch.randn(n, dim, generator=g, dtype=torch.float64)
    assert byol_loss(p, z).item() == pytest.approx(reference_byol(p.numpy(), z.numpy()), rel=1e-10, abs=1e-12)


def test_zero_when_aligned_up_to_positive_scale():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 5, generator=g, dtype=torch.float64)
    scale = torch.rand(6, 1, generator=g, dtype=torch.float64) * 5 + 0.1
    assert byol_loss(z * scale, z).item() == pytest.approx(0.0, abs=1e-12)


def test_four_when_opposite():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(6, 5, generator=g, dtype=torch.float64)
    assert byol_loss(-z, z).item() == pytest.approx(4.0, abs=1e-12)
    assert byol_loss(-3 * z, 0.5 * z).item() == pytest.approx(4.0, abs=1e-12)


def test_orthogonal_gives_two():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    z = torch.tensor([[0.0, 3.0], [-1.0, 0.0]], dtype=torch.float64)
    assert byol_loss(p, z).item() == pytest.approx(2.0, abs=1e-12)


def test_no_gradient_into_target():
    g = torch.Generator().manual_seed(3)
    p = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    byol_loss(p, z).backward()
    assert z.grad is None or torch.count_nonzero(z.grad) == 0
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_module_loss_is_symmetric_sum_over_directions():
    d, enc, obj = tiny_setup()
    batch = tiny_batch()
    loss, logs = obj(enc, batch, {"ema": 0.99})
    # reference: recompute online predictions and teacher projections, then sum both directions in numpy
    with torch.no_grad():
        reps = enc(torch.cat(batch["views"]))[1].chunk(2)
        p = [obj.predictor(obj.projector(r)) for r in reps]
        t_enc, t_proj = obj.teacher.nets
        t_reps = t_enc(torch.cat(batch["views"]))[1].chunk(2)
        t = [t_proj(r) for r in t_reps]
    ref = reference_byol(p[1].numpy(), t[0].numpy()) + reference_byol(p[0].numpy(), t[1].numpy())
    assert loss.item() == pytest.approx(ref, rel=1e-4, abs=1e-6)
    assert logs["rep"].shape == (8, 16)


def test_module_gradients_reach_encoder_not_teacher():
    d, enc, obj = tiny_setup()
    loss, _ = obj(enc, tiny_batch(), {"ema": 0.99})
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    enc_grads = [p.grad for p in enc.parameters() if p.grad is not None]
    assert enc_grads and any(g.abs().sum() > 0 for g in enc_grads)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.predictor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.projector.parameters())
    teacher_params = list(obj.teacher.parameters())
    assert teacher_params
    for p in teacher_params:
        assert not p.requires_grad
        assert p.grad is None


def test_module_multicrop_smoke():
    d, enc, obj = tiny_setup()
    loss, _ = obj(enc, tiny_batch(local=True), {"ema": 0.99})
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    assert all(p.grad is None for p in obj.teacher.parameters())


def _perturb_student(enc, obj, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(enc.parameters()) + list(obj.projector.parameters()):
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_after_step_teacher_half_momentum_is_exact_average():
    d, enc, obj = tiny_setup()
    _perturb_student(enc, obj)
    t_enc, t_proj = obj.teacher.nets
    old_teacher = [p.detach().clone() for p in list(t_enc.parameters()) + list(t_proj.parameters())]
    student = [p.detach().clone() for p in list(enc.parameters()) + list(obj.projector.parameters())]
    assert len(old_teacher) == len(student)
    assert any(not torch.equal(a, b) for a, b in zip(old_teacher, student))  # the update is not trivial
    obj.after_step(enc, {"ema": 0.5})
    new_teacher = list(t_enc.parameters()) + list(t_proj.parameters())
    for new, old, s in zip(new_teacher, old_teacher, student):
        expected = (0.5 * old.double().numpy()) + (0.5 * s.double().numpy())
        np.testing.assert_allclose(new.detach().double().numpy(), expected, rtol=1e-6, atol=1e-7)
    # the student is untouched by the teacher update
    for p, s in zip(list(enc.parameters()) + list(obj.projector.parameters()), student):
        assert torch.equal(p.detach(), s)


def test_after_step_teacher_general_momentum():
    d, enc, obj = tiny_setup()
    _perturb_student(enc, obj, seed=6)
    t_enc, t_proj = obj.teacher.nets
    old_teacher = [p.detach().clone() for p in list(t_enc.parameters()) + list(t_proj.parameters())]
    student = [p.detach().clone() for p in list(enc.parameters()) + list(obj.projector.parameters())]
    m = 0.9
    obj.after_step(enc, {"ema": m})
    for new, old, s in zip(list(t_enc.parameters()) + list(t_proj.parameters()), old_teacher, student):
        expected = m * old.double().numpy() + (1 - m) * s.double().numpy()
        np.testing.assert_allclose(new.detach().double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_after_step_teacher_momentum_one_leaves_teacher_unchanged():
    d, enc, obj = tiny_setup()
    _perturb_student(enc, obj)
    old_teacher = [p.detach().clone() for p in obj.teacher.parameters()]
    obj.after_step(enc, {"ema": 1.0})
    for new, old in zip(obj.teacher.parameters(), old_teacher):
        assert torch.equal(new.detach(), old)


def test_after_step_teacher_copies_batchnorm_buffers():
    d, enc, obj = tiny_setup()
    obj.train()
    obj(enc, tiny_batch(), {"ema": 0.99})  # updates the student projector's BN running stats
    s_bufs = [b.clone() for b in obj.projector.buffers()]
    obj.after_step(enc, {"ema": 0.99})
    t_bufs = list(obj.teacher.nets[1].buffers())
    assert len(t_bufs) == len(s_bufs) > 0
    for t, s in zip(t_bufs, s_bufs):
        assert torch.equal(t, s)
