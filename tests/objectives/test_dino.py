"""DINO: the loss against a numpy loop over pairs, its invariants, the teacher temperature schedule, the head, and one
optimizer step + after_step (teacher EMA and centre) against a reference written here."""
import math

import numpy as np
import pytest
import torch

from multissl.domains.image import ImageDomain
from multissl.ema import teacher_momentum
from multissl.encoder import Encoder
from multissl.objectives.dino import DINO, dino_loss, teacher_entropy
from multissl.optim import build_optimizer


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_dino(student, teacher, center, teacher_temp, student_temp):
    """Plain loops: for teacher view i and student view j != i, per sample -sum_k P_t[k] log P_s[k]."""
    terms = []
    for i, t in enumerate(teacher):
        p_t = np_softmax((np.asarray(t, np.float64) - np.asarray(center, np.float64)) / teacher_temp)
        for j, s in enumerate(student):
            if j == i:
                continue
            log_p_s = np.log(np_softmax(np.asarray(s, np.float64) / student_temp))
            terms.append(np.mean([-(p_t[b] * log_p_s[b]).sum() for b in range(len(p_t))]))
    return float(np.mean(terms))


def logits(n_views, b, k, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(b, k, generator=g, dtype=torch.float64) for _ in range(n_views)]


@pytest.mark.parametrize("n_views,b,k", [(2, 1, 3), (2, 5, 8), (4, 3, 16), (6, 2, 5)])
@pytest.mark.parametrize("teacher_temp", [0.04, 0.07])
def test_matches_reference(n_views, b, k, teacher_temp):
    student = logits(n_views, b, k, seed=n_views * 100 + b * 10 + k)
    teacher = logits(2, b, k, seed=k)
    center = torch.randn(k, generator=torch.Generator().manual_seed(b), dtype=torch.float64)
    got = dino_loss(student, teacher, center, teacher_temp, 0.1).item()
    ref = reference_dino([s.numpy() for s in student], [t.numpy() for t in teacher], center.numpy(), teacher_temp, 0.1)
    assert got == pytest.approx(ref, rel=1e-10)


def test_loss_is_entropy_plus_kl_and_uniform_collapse_reads_log_k():
    student, teacher = logits(3, 4, 10, seed=1), logits(2, 4, 10, seed=2)
    center = torch.zeros(10, dtype=torch.float64)
    # cross-entropy = h(teacher) + KL >= h(teacher), equal when the student predicts the teacher exactly
    loss = dino_loss(student, teacher, center, 0.04)
    assert loss.item() >= teacher_entropy(teacher, center, 0.04).item()
    # a constant teacher output equals its centre: uniform targets, entropy log K, loss log K for a constant student
    const = torch.full((4, 10), 0.3, dtype=torch.float64)
    assert teacher_entropy([const, const], const[0], 0.04).item() == pytest.approx(math.log(10), abs=1e-12)
    assert dino_loss([const] * 3, [const] * 2, const[0], 0.04).item() == pytest.approx(math.log(10), abs=1e-12)


def test_centre_shift_of_the_whole_row_changes_nothing_and_symmetric_in_global_views():
    student, teacher = logits(2, 4, 6, seed=3), logits(2, 4, 6, seed=4)
    c = torch.zeros(6, dtype=torch.float64)
    base = dino_loss(student, teacher, c, 0.05)
    # softmax ignores a constant added to every logit of a row
    assert dino_loss([s + 2.5 for s in student], teacher, c + 1.0, 0.05).item() == pytest.approx(base.item(), rel=1e-12)
    # two views: swapping both the teacher's and the student's views gives the same loss
    assert dino_loss(student[::-1], teacher[::-1], c, 0.05).item() == pytest.approx(base.item(), rel=1e-12)


def test_gradient_reaches_student_never_teacher_or_centre():
    student = [s.requires_grad_() for s in logits(3, 4, 6, seed=5)]
    teacher = [t.requires_grad_() for t in logits(2, 4, 6, seed=6)]
    center = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    dino_loss(student, teacher, center, 0.04).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher) and center.grad is None


def tiny_setup(seed=0, **kw):
    torch.manual_seed(seed)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    obj = DINO(enc, d, projector=(32, 32, 8), out_dim=24, **{"use_bn": True, **kw})
    return d, enc, obj


def tiny_batch(n=6, local=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 1, 8, 8, generator=g) for _ in range(2)]
    views += [torch.randn(n, 1, 4, 4, generator=g) for _ in range(local)]
    return {"views": views, "y": torch.zeros(n, dtype=torch.long)}


def sched(step, total=100, ema=0.9):
    return {"step": step, "total_steps": total, "progress": step / total, "ema": ema, "lr": 1e-3, "wd": 0.05}


def test_teacher_temperature_warms_up_linearly_then_stays():
    _, _, obj = tiny_setup(teacher_temp=0.07, warmup_teacher_temp=0.04, teacher_temp_warmup=0.3)
    temps = [obj.temperature(sched(s, total=100)) for s in (0, 15, 30, 31, 99)]
    assert temps == pytest.approx([0.04, 0.055, 0.07, 0.07, 0.07], abs=1e-12)
    _, _, flat = tiny_setup(teacher_temp=0.07, teacher_temp_warmup=0.0)
    assert flat.temperature(sched(0)) == pytest.approx(0.07)


def test_teacher_momentum_is_its_own_cosine_to_one_or_the_engines():
    got = [teacher_momentum(0.996, sched(s, total=100, ema=0.5)) for s in (0, 50, 100)]
    assert got == pytest.approx([0.996, 0.998, 1.0], abs=1e-12)
    assert teacher_momentum(None, sched(50, ema=0.5)) == 0.5
    _, enc, obj = tiny_setup(momentum=0.6)  # after_step moves the teacher by its own momentum (0.8 half way)
    before = [t.detach().clone() for t in obj.teacher.nets[0].parameters()]
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(1.0)
    obj.after_step(enc, sched(50, total=100, ema=0.1))
    for t, old, s in zip(obj.teacher.nets[0].parameters(), before, enc.parameters()):
        torch.testing.assert_close(t, 0.8 * old + 0.2 * s)


def test_head_is_l2_bottleneck_then_weight_normalised_layer():
    _, _, obj = tiny_setup()
    x = torch.randn(5, 16)
    with torch.no_grad():
        obj.head.last.weight.mul_(7.0)  # the scale of V cancels: W = V / |V| row-wise (g fixed to 1)
        out = obj.head(x)
        z = obj.projector(x)
        w = obj.head.last.weight / obj.head.last.weight.norm(dim=1, keepdim=True)
        ref = (z / z.norm(dim=1, keepdim=True)) @ w.T
    torch.testing.assert_close(out, ref)
    assert out.abs().max() <= 1 + 1e-6  # cosine similarities
    assert obj.head.last_g is None and sum(isinstance(m, torch.nn.BatchNorm1d) for m in obj.head.modules()) == 2
    plain = DINO(obj.teacher.nets[0], None, projector=(8, 4), out_dim=6, norm_last_layer=False, use_bn=False).head
    assert plain.last_g.shape == (6, 1) and not any(isinstance(m, torch.nn.BatchNorm1d) for m in plain.modules())
    assert [type(m).__name__ for m in plain.mlp] == ["Linear", "GELU", "Linear"]


@pytest.mark.parametrize("local", [0, 3])
def test_module_two_views_and_local_views(local):
    _, enc, obj = tiny_setup()
    loss, logs = obj(enc, tiny_batch(local=local), sched(50))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"rep", "teacher_entropy", "kl", "teacher_temp"} <= logs.keys() and logs["rep"].shape == (6, 16)
    assert logs["kl"].item() >= -1e-5 and 0 <= logs["teacher_entropy"].item() <= math.log(24) + 1e-5
    loss.backward()
    assert enc.embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.head.parameters())
    assert all(p.grad is None for p in obj.teacher.parameters())
    # the student saw every view; the teacher's targets came from the 2 global views only
    assert loss.item() == pytest.approx(reference_module_loss(enc, obj, tiny_batch(local=local), 50), rel=1e-5)


def reference_module_loss(enc, obj, batch, step):
    """The head sees all views in one batch (its BatchNorm statistics cover every crop); the teacher the 2 global."""
    n = len(batch["y"])
    with torch.no_grad():
        s = obj.head(torch.cat([enc(v)[1] for v in batch["views"]])).double().split(n)
        t_enc, t_head = obj.teacher.nets
        t = t_head(torch.cat([t_enc(v)[1] for v in batch["views"][:2]])).double().split(n)
    s, t = [x.numpy() for x in s], [x.numpy() for x in t]
    return reference_dino(s, t, obj.center.double().numpy(), obj.temperature(sched(step)), 0.1)


def test_last_layer_gets_no_update_while_frozen_then_trains():
    _, enc, obj = tiny_setup(freeze_last_layer=2)
    opt = build_optimizer("adamw", [enc, obj], 1e-2, 0.05)  # weight decay would move it if it were stepped
    before = obj.head.last.weight.detach().clone()
    for step in range(2):
        loss, _ = obj(enc, tiny_batch(seed=step), sched(step))
        loss.backward()
        assert obj.head.last.weight.grad is None
        opt.step()
        opt.zero_grad(set_to_none=True)
        assert torch.equal(obj.head.last.weight, before)
    loss, _ = obj(enc, tiny_batch(seed=2), sched(2))
    loss.backward()
    assert obj.head.last.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(obj.head.last.weight, before)


def test_one_optimizer_step_and_after_step_match_reference():
    """Centre: m * c + (1 - m) * mean of the teacher's global-view outputs (before the update); teacher:
    EMA of the student after the optimizer step; both reached only through after_step."""
    _, enc, obj = tiny_setup(center_momentum=0.8, momentum=None)  # None: the engine's ema, 0.7 here
    with torch.no_grad():
        obj.center.normal_()
    batch, s = tiny_batch(n=5, local=2), sched(10, ema=0.7)
    center0 = obj.center.clone()
    with torch.no_grad():
        t_enc, t_head = obj.teacher.nets
        t_out = t_head(torch.cat([t_enc(v)[1] for v in batch["views"][:2]])).double().numpy()  # [2b K]
    teacher0 = [p.detach().double().clone() for p in obj.teacher.parameters()]
    opt = torch.optim.SGD([*enc.parameters(), *obj.head.parameters()], lr=0.5)
    loss, _ = obj(enc, batch, s)
    loss.backward()
    opt.step()
    assert torch.equal(obj.center, center0)  # forward and the optimizer leave the centre alone
    student = [p.detach().double().clone() for p in [*enc.parameters(), *obj.head.parameters()]]
    obj.after_step(enc, s)
    expected_center = 0.8 * center0.double().numpy() + 0.2 * t_out.mean(0)
    np.testing.assert_allclose(obj.center.double().numpy(), expected_center, rtol=1e-5, atol=1e-6)
    for new, old, st in zip(obj.teacher.parameters(), teacher0, student, strict=True):
        np.testing.assert_allclose(new.double().numpy(), (0.7 * old + 0.3 * st).numpy(), rtol=1e-5, atol=1e-6)


def test_skipped_step_leaves_centre_and_state_is_buffers():
    _, enc, obj = tiny_setup()
    obj(enc, tiny_batch(seed=1), sched(3))  # step 3 skipped: no after_step
    center0 = obj.center.clone()
    obj.after_step(enc, sched(4))  # step 4 applied without its own forward: nothing of step 3 is used
    assert torch.equal(obj.center, center0)
    assert "center" in dict(obj.named_buffers())  # checkpointed with the model, restored on a skipped step
    state = obj.state_dict()
    assert "center" in state and all(k.startswith(("head.", "teacher.", "center")) for k in state)
