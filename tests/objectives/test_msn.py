"""MSN: the loss against a numpy transcription of the official recipe (soft nearest-prototype predictions, sharpening
by a power, Sinkhorn with its 1/K and 1/B factors, me-max), Sinkhorn's marginals, the invariants (uniform predictions:
me_max 0 and ce log K; one prototype for all: me_max log K), the gradient paths, the head and the prototypes (shared,
normalised, exempt from weight decay, fixed for the first steps), the module's loss against a reference built from
the masked encoder and the teacher, local views, branches, and one optimizer step + after_step (the teacher's EMA)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from multissl.domains.image import ImageDomain
from multissl.objectives.msn import (
    MSN,
    msn_loss,
    msn_projector,
    msn_targets,
    sinkhorn_probs,
)

from multissl.encoder import Encoder
from multissl.optim import build_optimizer, param_groups


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_sinkhorn(p, iterations):
    """The official distributed_sinkhorn on one process: Q = p.T [K B] scaled to sum 1, then rows (prototypes) to 1/K
    and columns (samples) to 1/B `iterations` times; returns (Q * B).T."""
    q = np.array(p, np.float64).T
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q /= q.sum(1, keepdims=True)
        q /= k
        q /= q.sum(0, keepdims=True)
        q /= b
    return (q * b).T


def reference_msn(anchor, target, tau, sharpen_t, iterations, me_max_weight):
    """The paper's pseudocode with plain loops: p = softmax(cos / tau) for every anchor row; targets: softmax(cos /
    tau) raised to 1/T, renormalised, then Sinkhorn, one per sample and shared by that sample's anchor views;
    ce = mean over anchor rows of -sum t log p; me_max = sum p_bar log p_bar + log K over the mean prediction."""
    sharp = np_softmax(np.asarray(target, np.float64) / tau) ** (1 / sharpen_t)
    sharp /= sharp.sum(1, keepdims=True)
    t = reference_sinkhorn(sharp, iterations) if iterations else sharp
    rows, ces = [], []
    for view in anchor:
        p = np_softmax(np.asarray(view, np.float64) / tau)
        for i in range(len(p)):
            ces.append(-sum(t[i, k] * math.log(p[i, k]) for k in range(p.shape[1])))
            rows.append(p[i])
    p_bar = np.mean(rows, 0)
    me_max = sum(v * math.log(v) for v in p_bar) + math.log(len(p_bar))
    ce = float(np.mean(ces))
    entropy = float(np.mean([-sum(v * math.log(v) for v in row if v > 0) for row in t]))
    return ce + me_max_weight * me_max, ce, me_max, entropy


def cosines(n_views, b, k, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1)
    return [F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1) @ c.T for _ in range(n_views)]


@pytest.mark.parametrize("n_anchor,b,k", [(1, 1, 3), (1, 6, 8), (3, 5, 4), (5, 4, 20)])
@pytest.mark.parametrize("iterations,weight", [(3, 1.0), (0, 1.0), (10, 0.5)])
def test_loss_matches_reference(n_anchor, b, k, iterations, weight):
    anchor, (target,) = cosines(n_anchor, b, k, seed=b * k + n_anchor), cosines(1, b, k, seed=k)
    loss, terms = msn_loss(anchor, target, 0.1, 0.025, iterations, weight)
    ref = reference_msn([a.numpy() for a in anchor], target.numpy(), 0.1, 0.25, iterations, weight)
    assert [loss.item(), terms["ce"].item(), terms["me_max"].item(), terms["target_entropy"].item()] == \
        pytest.approx(ref, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("b,k,iterations", [(1, 3, 1), (7, 4, 3), (16, 30, 5)])
def test_sinkhorn_matches_official_and_balances_the_batch(b, k, iterations):
    p = F.softmax(cosines(1, b, k, seed=b + k)[0] / 0.025, dim=-1)
    np.testing.assert_allclose(sinkhorn_probs(p, iterations).numpy(), reference_sinkhorn(p.numpy(), iterations),
                               rtol=1e-10, atol=1e-14)
    q = sinkhorn_probs(p, 300)  # many rounds: every prototype holds B/K of the batch's mass, every sample 1
    np.testing.assert_allclose(q.sum(1).numpy(), np.ones(b), rtol=1e-12)
    np.testing.assert_allclose(q.sum(0).numpy(), np.full(k, b / k), rtol=1e-5)
    assert torch.equal(sinkhorn_probs(p, 0), p)


def test_sharpened_targets_are_the_power_of_the_anchor_distribution():
    (s,) = cosines(1, 5, 7, seed=3)
    sharp = F.softmax(s / 0.1, dim=-1) ** 4  # the paper's T = 0.25
    torch.testing.assert_close(msn_targets(s, 0.025, 0), sharp / sharp.sum(1, keepdim=True), rtol=1e-12, atol=1e-15)


def test_uniform_predictions_give_me_max_zero_and_ce_log_k():
    k, b = 12, 5
    const = [torch.full((b, k), 0.3, dtype=torch.float64)] * 2  # equal similarities: uniform predictions
    (target,) = cosines(1, b, k, seed=4)
    loss, terms = msn_loss(const, target)
    assert terms["me_max"].item() == pytest.approx(0.0, abs=1e-12)
    assert terms["ce"].item() == pytest.approx(math.log(k), rel=1e-12)  # the targets' rows sum to 1
    assert loss.item() == pytest.approx(math.log(k), rel=1e-12)
    # constant target similarities: uniform targets (Sinkhorn keeps them uniform), entropy log K
    _, terms = msn_loss(const, const[0])
    assert terms["target_entropy"].item() == pytest.approx(math.log(k), rel=1e-12)


def test_every_sample_on_one_prototype_gives_me_max_log_k():
    k, b = 10, 6
    collapsed = torch.full((b, k), -1.0, dtype=torch.float64)
    collapsed[:, 2] = 1.0  # every anchor closest to prototype 2, by far at temperature 0.01
    (target,) = cosines(1, b, k, seed=5)
    _, terms = msn_loss([collapsed], target, temperature=0.01)
    assert terms["me_max"].item() == pytest.approx(math.log(k), abs=1e-6)
    # spreading the predictions over the prototypes lowers it
    spread = torch.full((k, k), -1.0, dtype=torch.float64).fill_diagonal_(1.0)
    _, terms = msn_loss([spread], spread, temperature=0.01)
    assert terms["me_max"].item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_reaches_anchors_never_the_target():
    anchor = [a.requires_grad_() for a in cosines(2, 4, 6, seed=6)]
    (target,) = cosines(1, 4, 6, seed=7)
    target.requires_grad_()
    loss, _ = msn_loss(anchor, target)
    loss.backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in anchor) and target.grad is None
    # me-max alone sends a gradient too: the anchors' mean prediction moves towards uniform
    anchor = [a.detach().requires_grad_() for a in anchor]
    loss_me, terms = msn_loss(anchor, target, me_max_weight=1.0)
    (loss_me - terms["ce"]).backward()
    assert anchor[0].grad.abs().sum() > 0


# ---- the module ------------------------------------------------------------------------------------------------
def tiny_setup(seed=0, **kw):
    torch.manual_seed(seed)
    d = ImageDomain(image_size=8, channels=1, patch_size=2, mask_ratio=0.3)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    obj = MSN(enc, d, projector=(32, 32, 8), prototypes=12, **kw)
    return d, enc, obj


def tiny_batch(d, n=6, local=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 1, 8, 8, generator=g) for _ in range(2)]
    views += [torch.randn(n, 1, 4, 4, generator=g) for _ in range(local)]
    keep, masked = d.mask(n, g)
    return {"views": views, "keep": keep, "masked": masked, "y": torch.zeros(n, dtype=torch.long)}


def sched(step, total=100, ema=0.9):
    return {"step": step, "total_steps": total, "progress": step / total, "ema": ema, "lr": 1e-3, "wd": 0.05}


def reference_module_loss(enc, obj, batch):
    """Anchors: view 0 with the masked tokens dropped, then the local views (one head pass each group); target:
    view 1 whole through the teacher; both against the same normalised prototypes."""
    n = len(batch["y"])
    with torch.no_grad():
        protos = F.normalize(obj.prototypes.view(12, -1), dim=1).double()
        z = [obj.projector(enc(batch["views"][0], batch["keep"])[1])]
        if len(batch["views"]) > 2:
            z += list(obj.projector(torch.cat([enc(v)[1] for v in batch["views"][2:]])).split(n))
        t_enc, t_proj = obj.teacher.nets
        t = t_proj(t_enc(batch["views"][1])[1])
    anchor = [(F.normalize(x.double(), dim=1) @ protos.T).numpy() for x in z]
    target = (F.normalize(t.double(), dim=1) @ protos.T).numpy()
    return reference_msn(anchor, target, 0.1, 0.25, 3, 1.0)[0]


@pytest.mark.parametrize("local", [0, 3])
def test_module_masked_anchor_and_local_views(local):
    d, enc, obj = tiny_setup()
    batch = tiny_batch(d, local=local)
    assert batch["keep"].shape == (6, 11)  # 0.3 of the 16 patches dropped: the domain's ratio
    loss, logs = obj(enc, batch, sched(5))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert {"rep", "ce", "me_max", "target_entropy", "prototypes_used"} <= logs.keys()
    assert logs["rep"].shape == (6, 16) and not logs["rep"].requires_grad
    torch.testing.assert_close(logs["rep"], enc(batch["views"][0], batch["keep"])[1].detach())  # the masked view's
    assert 0 <= logs["me_max"].item() <= math.log(12) and 1 <= logs["prototypes_used"].item() <= 6
    assert loss.item() == pytest.approx(reference_module_loss(enc, obj, batch), rel=1e-5)
    loss.backward()
    assert enc.embed.proj.weight.grad.abs().sum() > 0 and obj.prototypes.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.projector.parameters())
    assert all(p.grad is None for p in obj.teacher.parameters())


def test_head_prototypes_and_state():
    _, _, obj = tiny_setup()
    assert [type(m).__name__ for m in obj.projector] == ["Linear", "BatchNorm1d", "GELU"] * 2 + ["Linear"]
    assert msn_projector(16, (32, 32, 8))[-1].out_features == 8
    assert obj.prototypes.shape == (12 * 8,) and obj.prototype_matrix().norm(dim=1).sub(1).abs().max() < 1e-6
    assert obj.prototypes.abs().max() <= 8 ** -0.5  # the official uniform(-1/sqrt(d), 1/sqrt(d))
    # the prototypes are the student's alone (the teacher has encoder + head copies) and exempt from weight decay
    assert {k.split(".")[0] for k in obj.state_dict()} == {"projector", "prototypes", "teacher"}
    exempt = [g for g in param_groups(obj) if any(p is obj.prototypes for p in g["params"])]
    assert exempt[0]["exclude"] and exempt[0]["weight_decay"] == 0.0


def test_prototypes_fixed_for_the_first_steps_then_trained():
    d, enc, obj = tiny_setup(freeze_prototypes=2)
    opt = build_optimizer("adamw", [enc, obj], 1e-2, 0.05)
    before = obj.prototypes.detach().clone()
    for step in range(2):
        loss, _ = obj(enc, tiny_batch(d, seed=step), sched(step))
        loss.backward()
        assert obj.prototypes.grad is None
        opt.step()
        opt.zero_grad(set_to_none=True)
        assert torch.equal(obj.prototypes, before)
    loss, _ = obj(enc, tiny_batch(d, seed=2), sched(2))
    loss.backward()
    assert obj.prototypes.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(obj.prototypes, before)


def test_branches_give_prediction_and_balanced_target():
    d, enc, obj = tiny_setup()
    obj.eval()
    batch = tiny_batch(d, n=5)
    batch["views"] = batch["views"][:1]  # evaluation batches carry one view
    online, target = obj.branches(enc.eval(), batch)
    assert online.shape == target.shape == (5, 12)
    torch.testing.assert_close(online.sum(1).double(), torch.ones(5, dtype=torch.float64))
    protos = obj.prototype_matrix()
    t_enc, t_proj = obj.teacher.nets
    s = F.normalize(t_proj(t_enc(batch["views"][0])[1]), dim=1) @ protos.T  # the whole view, unmasked
    torch.testing.assert_close(target, msn_targets(s, 0.025, 3))


def test_one_optimizer_step_and_teacher_ema_match_reference():
    d, enc, obj = tiny_setup(momentum=None)  # None: the engine's ema, 0.7 here
    batch, s = tiny_batch(d, n=5, local=2), sched(10, ema=0.7)
    teacher0 = [p.detach().double().clone() for p in obj.teacher.parameters()]
    opt = torch.optim.SGD([*enc.parameters(), *obj.projector.parameters(), obj.prototypes], lr=0.5)
    loss, _ = obj(enc, batch, s)
    loss.backward()
    opt.step()
    assert all(torch.equal(p.double(), q) for p, q in zip(obj.teacher.parameters(), teacher0))  # only after_step
    student = [p.detach().double().clone() for p in [*enc.parameters(), *obj.projector.parameters()]]
    obj.after_step(enc, s)
    for new, old, st in zip(obj.teacher.parameters(), teacher0, student, strict=True):
        np.testing.assert_allclose(new.double().numpy(), (0.7 * old + 0.3 * st).numpy(), rtol=1e-6, atol=1e-7)
    # its own momentum: cosine from 0.996 to 1, 0.998 half way
    _, enc, obj = tiny_setup(momentum=0.996)
    before = [p.detach().clone() for p in obj.teacher.nets[0].parameters()]
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(1.0)
    obj.after_step(enc, sched(50, total=100, ema=0.1))
    for t, old, st in zip(obj.teacher.nets[0].parameters(), before, enc.parameters()):
        torch.testing.assert_close(t, 0.998 * old + 0.002 * st)
