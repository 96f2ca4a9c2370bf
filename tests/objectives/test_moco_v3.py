"""MoCo v3: the contrastive loss against loops, no gradient into keys, the heads, the module's symmetric loss, and
two training steps against the paper's pseudocode (momentum update at the start of each step)."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.objectives.moco_v3 import MoCoV3, moco_v3_loss


def reference_ctr(q, k, t):
    """2t * mean_i -log(exp(cos(q_i, k_i)/t) / sum_j exp(cos(q_i, k_j)/t)), by loops."""
    q, k = q.tolist(), k.tolist()

    def cos(u, v):
        return sum(a * b for a, b in zip(u, v)) / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))
    total = 0.0
    for i, qi in enumerate(q):
        logits = [cos(qi, kj) / t for kj in k]
        total += -logits[i] + math.log(sum(math.exp(x) for x in logits))
    return 2 * t * total / len(q)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def tiny_setup(dtype=torch.float32):
    torch.manual_seed(0)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2).to(dtype)
    return enc, MoCoV3(enc, d, projector=(32, 32, 16), predictor=(32, 16), temperature=0.2).to(dtype)


def tiny_batch(n=8, local=False, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 1, 8, 8, generator=g, dtype=dtype) for _ in range(2)]
    views += [torch.randn(n, 1, 4, 4, generator=g, dtype=dtype)] if local else []
    return {"views": views, "y": torch.zeros(n, dtype=torch.long)}


# ---- loss ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0.1, 0.2, 1.0])
@pytest.mark.parametrize("n,dim", [(1, 3), (4, 5), (9, 2)])
def test_loss_matches_reference(n, dim, t):
    q, k = rand(n, dim, seed=n + dim), rand(n, dim, seed=n + dim + 50)
    assert moco_v3_loss(q, k, t).item() == pytest.approx(reference_ctr(q, k, t), rel=1e-10, abs=1e-12)


def test_default_temperature_is_0_2():
    q, k = rand(5, 4, seed=1), rand(5, 4, seed=2)
    assert moco_v3_loss(q, k).item() == pytest.approx(reference_ctr(q, k, 0.2), rel=1e-10)


@pytest.mark.parametrize("n", [1, 3, 8])
def test_collapsed_embeddings_give_2t_log_n(n):
    z = rand(1, 4, seed=3).expand(n, -1)
    assert moco_v3_loss(z, 2 * z, 0.2).item() == pytest.approx(0.4 * math.log(n), abs=1e-12)


def test_gradient_reaches_queries_only():
    q, k = rand(5, 3, seed=4).requires_grad_(), rand(5, 3, seed=5).requires_grad_()
    moco_v3_loss(q, k, 0.2).backward()
    assert k.grad is None
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


# ---- heads --------------------------------------------------------------------------------------------------
def test_heads_as_in_the_paper():
    enc, obj = tiny_setup()
    assert [type(m) for m in obj.projector] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear, nn.BatchNorm1d]
    assert not obj.projector[-1].affine  # the projector's last BN has no affine
    assert [type(m) for m in obj.predictor] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert all(m.bias is None for m in [*obj.projector, *obj.predictor] if isinstance(m, nn.Linear))
    t_enc, t_proj = obj.teacher.nets  # momentum branch: encoder + projector, no predictor, no gradient
    assert [type(m) for m in t_proj] == [type(m) for m in obj.projector]
    assert not any(p.requires_grad for p in obj.teacher.parameters())


# ---- module -------------------------------------------------------------------------------------------------
def capture(obj):
    q, k = [], []
    obj.predictor.register_forward_hook(lambda m, i, o: q.append(o.detach().double()))
    obj.teacher.nets[1].register_forward_hook(lambda m, i, o: k.append(o.detach().double()))
    return q, k


def test_module_loss_is_ctr_q1_k2_plus_ctr_q2_k1():
    enc, obj = tiny_setup()
    q, k = capture(obj)
    loss, logs = obj(enc, tiny_batch(), {"ema": 0.99, "step": 0})
    assert len(q) == len(k) == 2
    assert loss.item() == pytest.approx(reference_ctr(q[1], k[0], 0.2) + reference_ctr(q[0], k[1], 0.2), rel=1e-5)
    cos = (F.cosine_similarity(q[1], k[0]).mean() + F.cosine_similarity(q[0], k[1]).mean()) / 2
    assert logs["pos_cos"].item() == pytest.approx(cos.item(), rel=1e-5, abs=1e-6)
    acc = sum((F.normalize(a, dim=1) @ F.normalize(b, dim=1).T).argmax(1).eq(torch.arange(8)).double().mean()
              for a, b in ((q[1], k[0]), (q[0], k[1]))) / 2
    assert logs["acc"].item() == pytest.approx(acc.item())
    assert logs["rep"].shape == (8, 16) and not logs["rep"].requires_grad


def test_module_multicrop_global_keys_against_every_view():
    enc, obj = tiny_setup()
    q, k = capture(obj)
    loss, _ = obj(enc, tiny_batch(local=True), {"ema": 0.99, "step": 0})
    assert len(q) == 3 and len(k) == 2  # keys of the global views only
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]
    assert loss.item() == pytest.approx(2 * sum(reference_ctr(q[j], k[i], 0.2) for i, j in pairs) / 4, rel=1e-5)
    loss.backward()
    assert enc.embed.proj.weight.grad.abs().sum() > 0 and all(p.grad is None for p in obj.teacher.parameters())


def test_module_gradients_reach_online_branch_not_teacher():
    enc, obj = tiny_setup()
    loss, _ = obj(enc, tiny_batch(), {"ema": 0.99, "step": 0})
    loss.backward()
    for m in (enc, obj.projector, obj.predictor):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    assert all(p.grad is None for p in obj.teacher.parameters())


def test_two_steps_match_the_papers_pseudocode():
    """Ours: forward, SGD step, after_step (EMA update). The paper: each step first moves the momentum encoder
    towards the current online one, then computes keys and loss. Both give the same losses and parameters."""
    enc, obj = tiny_setup(torch.float64)
    f_q = [copy.deepcopy(m) for m in (enc, obj.projector, obj.predictor)]  # the paper's online branch
    f_k = [copy.deepcopy(m) for m in (enc, obj.projector)]  # its momentum branch (a copy at start)
    lr, moms = 0.5, [0.9, 0.7]
    opt = torch.optim.SGD([p for m in (enc, obj) for p in m.parameters() if p.requires_grad], lr=lr)
    ours, theirs = [], []
    for step, m in enumerate(moms):
        batch = tiny_batch(dtype=torch.float64, seed=step + 1)
        opt.zero_grad()
        loss, _ = obj(enc, batch, {"ema": m, "step": step})
        loss.backward()
        opt.step()
        obj.after_step(enc, {"ema": m, "step": step})
        ours.append(loss.item())

        with torch.no_grad():  # momentum update at the start of the step (a no-op at the first)
            m_prev = moms[step - 1] if step else 1.0
            for s, t in zip([*f_q[0].parameters(), *f_q[1].parameters()], [*f_k[0].parameters(),
                                                                        *f_k[1].parameters()]):
                t.mul_(m_prev).add_((1 - m_prev) * s)
        x1, x2 = batch["views"]
        q1, q2 = (f_q[2](f_q[1](f_q[0](x)[1])) for x in (x1, x2))
        with torch.no_grad():
            k1, k2 = (f_k[1](f_k[0](x)[1]) for x in (x1, x2))

        def ctr(q, k, t=0.2):
            logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / t
            return F.cross_entropy(logits, torch.arange(len(q))) * 2 * t
        ref = ctr(q1, k2) + ctr(q2, k1)
        for p in (p for mod in f_q for p in mod.parameters()):
            p.grad = None
        ref.backward()
        with torch.no_grad():
            for p in (p for mod in f_q for p in mod.parameters()):
                p -= lr * p.grad
        theirs.append(ref.item())
    assert ours == pytest.approx(theirs, rel=1e-10)
    # after the last step, ours has already moved the teacher; the paper would at the start of the next one
    with torch.no_grad():
        for s, t in zip([*f_q[0].parameters(), *f_q[1].parameters()], [*f_k[0].parameters(), *f_k[1].parameters()]):
            t.mul_(moms[-1]).add_((1 - moms[-1]) * s)
    ours_params = [*enc.parameters(), *obj.projector.parameters(), *obj.predictor.parameters(),
                   *obj.teacher.parameters()]
    theirs_params = [p for mod in (*f_q, *f_k) for p in mod.parameters()]
    assert len(ours_params) == len(theirs_params)
    for a, b in zip(ours_params, theirs_params):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
