"""SwAV: Sinkhorn-Knopp against a numpy reference and its marginals, the swapped-prediction loss against a loop,
normalised and frozen prototypes, 2 views and 2 + local views, and the queue (filled in after_step, state in
buffers)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.objectives.swav import SwAV, sinkhorn, swav_loss
from multissl.optim import build_optimizer


def reference_sinkhorn(scores, epsilon, iterations):
    """The paper's Algorithm 1 in numpy: Q = exp(scores / eps).T [K B], normalised to sum 1, then `iterations` times
    rows (prototypes) to 1/K and columns (samples) to 1/B; returns (Q * B).T [B K]."""
    q = np.exp(np.asarray(scores, np.float64) / epsilon).T
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q /= q.sum(1, keepdims=True)
        q /= k
        q /= q.sum(0, keepdims=True)
        q /= b
    return (q * b).T


def reference_swav(scores, codes, temperature):
    """Loop over the pairs (code view i, predicting view j != i) and samples: -sum_k q[k] log softmax(s / t)[k]."""
    terms = []
    for i, q in enumerate(codes):
        for j, s in enumerate(scores):
            if j == i:
                continue
            per_sample = []
            for qb, sb in zip(np.asarray(q, np.float64), np.asarray(s, np.float64)):
                x = sb / temperature
                log_p = x - x.max() - math.log(np.exp(x - x.max()).sum())
                per_sample.append(-(qb * log_p).sum())
            terms.append(np.mean(per_sample))
    return float(np.mean(terms))


def cosine_scores(b, k, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    c = F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1)
    return z @ c.T  # [b k]


@pytest.mark.parametrize("b,k", [(1, 3), (5, 4), (16, 8), (7, 30)])
@pytest.mark.parametrize("epsilon,iterations", [(0.05, 3), (0.1, 1), (0.03, 10)])
def test_sinkhorn_matches_reference(b, k, epsilon, iterations):
    s = cosine_scores(b, k, seed=b * k)
    got = sinkhorn(s, epsilon, iterations)
    np.testing.assert_allclose(got.numpy(), reference_sinkhorn(s.numpy(), epsilon, iterations), rtol=1e-9, atol=1e-12)


def test_sinkhorn_marginals():
    s = cosine_scores(24, 6, seed=1)
    b, k = s.shape
    q = sinkhorn(s, 0.05, 3) / b  # the transport plan [B K]
    # the last scaling is over samples: every sample holds exactly 1/B
    np.testing.assert_allclose(q.sum(1).numpy(), np.full(b, 1 / b), rtol=1e-12)
    # every prototype holds about 1/K after 3 iterations, and 1/K to high precision after many
    assert np.abs(q.sum(0).numpy() * k - 1).max() < 0.5
    q = sinkhorn(s, 0.05, 300) / b
    np.testing.assert_allclose(q.sum(0).numpy(), np.full(k, 1 / k), rtol=1e-6)
    assert (q >= 0).all()


def test_sinkhorn_shared_rows_join_once_and_are_dropped():
    """Rows held by every process (a queue) join the transport problem as rows of the batch, and only the batch's
    codes come back."""
    s = cosine_scores(10, 5, seed=2)
    queue, batch = s[:6], s[6:]
    got = sinkhorn(batch, 0.05, 3, shared=queue)
    np.testing.assert_allclose(got.numpy(), reference_sinkhorn(s.numpy(), 0.05, 3)[6:], rtol=1e-9, atol=1e-12)


def test_sinkhorn_is_invariant_to_a_common_shift_and_stable_at_small_epsilon():
    s = cosine_scores(8, 4, seed=3)
    torch.testing.assert_close(sinkhorn(s + 0.7, 0.05, 3), sinkhorn(s, 0.05, 3), rtol=1e-10, atol=1e-12)
    q = sinkhorn(s.float(), 0.005, 3)  # exp(1 / 0.005) overflows float32
    assert q.dtype == torch.float32 and torch.isfinite(q).all()
    np.testing.assert_allclose(q.numpy(), reference_sinkhorn(s.float().double().numpy(), 0.005, 3), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("n_views,b,k", [(2, 1, 3), (2, 6, 5), (4, 3, 7), (6, 2, 4)])
def test_swav_loss_matches_reference(n_views, b, k):
    scores = [cosine_scores(b, k, seed=10 * v + b) for v in range(n_views)]
    codes = [sinkhorn(s, 0.05, 3) for s in scores[:2]]
    got = swav_loss(scores, codes, 0.1).item()
    assert got == pytest.approx(reference_swav([s.numpy() for s in scores], [c.numpy() for c in codes], 0.1),
                                rel=1e-10)


def test_swav_loss_symmetric_and_gradient_only_into_scores():
    scores = [cosine_scores(5, 4, seed=v).requires_grad_() for v in range(3)]
    codes = [sinkhorn(s.detach(), 0.05, 3).requires_grad_() for s in scores[:2]]
    loss = swav_loss(scores, codes, 0.1)
    # two views: swapping them swaps the two terms
    assert swav_loss(scores[1::-1], codes[::-1], 0.1).item() == pytest.approx(
        swav_loss(scores[:2], codes, 0.1).item(), rel=1e-12)
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in scores)
    assert all(c.grad is None for c in codes)
    # identical scores everywhere: uniform codes, and the loss is log K
    flat = [torch.full((5, 4), 0.2, dtype=torch.float64)] * 3
    assert swav_loss(flat, [sinkhorn(f, 0.05, 3) for f in flat[:2]], 0.1).item() == pytest.approx(math.log(4))


class TrainSet:
    """Stands in for the domain's loaded data where only the training set's size is read (the queue's bound)."""

    def __init__(self, n):
        self.n = n

    def dataset(self, split):
        return range(self.n)


def tiny_setup(seed=0, **kw):
    torch.manual_seed(seed)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    kw.setdefault("epsilon", 0.05)  # the paper's, which the references below use (the class's default is 0.02)
    return d, enc, SwAV(enc, TrainSet(100), projector=(32, 8), prototypes=12, **kw)


def tiny_batch(n=6, local=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 1, 8, 8, generator=g) for _ in range(2)]
    views += [torch.randn(n, 1, 4, 4, generator=g) for _ in range(local)]
    return {"views": views, "y": torch.arange(n)}


def sched(step, total=100):
    return {"step": step, "total_steps": total, "progress": step / total, "ema": 0.9, "lr": 1e-3, "wd": 0.05}


def test_prototypes_are_normalised_before_every_forward():
    _, enc, obj = tiny_setup(freeze_prototypes=0)
    with torch.no_grad():
        obj.prototypes.weight.mul_(torch.rand(12, 1) * 5 + 0.1)  # as an optimizer step would leave them
    obj(enc, tiny_batch(), sched(0))
    torch.testing.assert_close(obj.prototypes.weight.norm(dim=1), torch.ones(12))


@pytest.mark.parametrize("local", [0, 3])
def test_module_two_views_and_local_views(local):
    _, enc, obj = tiny_setup(freeze_prototypes=0)
    batch = tiny_batch(local=local)
    loss, logs = obj(enc, batch, sched(0))
    assert loss.ndim == 0 and torch.isfinite(loss) and logs["rep"].shape == (6, 16)
    assert 0 <= logs["assignment_entropy"].item() <= math.log(12) + 1e-5 and 1 <= logs["prototypes_used"].item() <= 6
    # reference: the same projections (one projector pass over all views), codes of the 2 global views
    with torch.no_grad():
        reps = [enc(v)[1] for v in batch["views"]]
        z = F.normalize(obj.projector(torch.cat(reps)), dim=1).split(6)
        s = [(e @ obj.prototypes.weight.T).double() for e in z]
    codes = [reference_sinkhorn(x.numpy(), 0.05, 3) for x in s[:2]]
    assert loss.item() == pytest.approx(reference_swav([x.numpy() for x in s], codes, 0.1), rel=1e-5)
    loss.backward()
    assert enc.embed.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.parameters())


def test_frozen_prototypes_get_no_update_then_train():
    _, enc, obj = tiny_setup(freeze_prototypes=2)
    opt = build_optimizer("adamw", [enc, obj], 1e-2, 0.05)  # weight decay would move them if they were stepped
    for step in range(2):
        loss, _ = obj(enc, tiny_batch(seed=step), sched(step))
        before = obj.prototypes.weight.detach().clone()  # as normalised for this step
        loss.backward()
        assert obj.prototypes.weight.grad is None
        opt.step()
        opt.zero_grad(set_to_none=True)
        assert torch.equal(obj.prototypes.weight, before)
    loss, _ = obj(enc, tiny_batch(seed=2), sched(2))
    before = obj.prototypes.weight.detach().clone()
    loss.backward()
    assert obj.prototypes.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(obj.prototypes.weight, before)


def test_queue_fills_in_after_step_and_joins_sinkhorn_once_full():
    d, enc, obj = tiny_setup(freeze_prototypes=0, queue_size=8, queue_start=1)
    assert [len(q) for q in obj.queues] == [8, 8]
    assert {"queues.0.rows", "queues.0.ptr", "queues.1.filled"} <= set(dict(obj.named_buffers()))  # checkpointed
    obj(enc, tiny_batch(seed=0), sched(0))
    obj.after_step(enc, sched(0))
    assert all(int(q.filled) == 0 for q in obj.queues)  # before queue_start nothing is stashed
    for step in (1, 2):
        obj(enc, tiny_batch(seed=step), sched(step))
        assert all(int(q.filled) == 6 * (step - 1) for q in obj.queues)  # forward only stashes
        obj.after_step(enc, sched(step))
    assert all(int(q.filled) == 8 for q in obj.queues)
    # full: each global view's codes come from Sinkhorn over its queue's rows and the batch
    batch = tiny_batch(seed=3)
    with torch.no_grad():
        obj.normalize_prototypes()
        reps = [enc(v)[1] for v in batch["views"]]
        z = F.normalize(obj.projector(torch.cat(reps)), dim=1).split(6)
        s = [(e @ obj.prototypes.weight.T).double() for e in z]
        qs = [(q.rows @ obj.prototypes.weight.T).double() for q in obj.queues]
    codes = [reference_sinkhorn(torch.cat([qs[i], s[i]]).numpy(), 0.05, 3)[8:] for i in range(2)]
    loss, _ = obj(enc, batch, sched(3))
    assert loss.item() == pytest.approx(reference_swav([x.numpy() for x in s], codes, 0.1), rel=1e-5)
    # step 3's 6 rows of each global view go in after the 12 of steps 1 and 2, the oldest overwritten first
    obj.after_step(enc, sched(3))
    for q, e in zip(obj.queues, z[:2]):
        torch.testing.assert_close(q.rows[[4, 5, 6, 7, 0, 1]], e)
        assert int(q.ptr) == 2


def test_skipped_step_stash_is_dropped():
    _, enc, obj = tiny_setup(queue_size=8, queue_start=0)
    obj(enc, tiny_batch(), sched(0))  # step 0 skipped: no after_step
    obj(enc, tiny_batch(seed=1), sched(1))
    obj.after_step(enc, sched(1))
    assert all(int(q.filled) == 6 for q in obj.queues)


def test_queue_size_is_checked_against_the_training_set():
    _, enc, _ = tiny_setup()
    with pytest.raises(UserError, match="queue_size"):
        SwAV(enc, TrainSet(100), queue_size=100)  # a queue as long as the data would hold each sample's own rows
    assert SwAV(enc, TrainSet(100)).queues is None  # 0: off


def test_one_optimizer_step_matches_reference():
    """Parameters after one SGD step equal those from the gradient of a loss written here as loops (codes from the
    numpy Sinkhorn, no gradient), and the next forward renormalises the stepped prototypes row by row."""
    _, enc, obj = tiny_setup(freeze_prototypes=0)
    batch, lr = tiny_batch(n=5, local=2, seed=4), 0.5
    params = [*enc.parameters(), *obj.parameters()]
    start = [p.detach().clone() for p in params]
    # reference gradient: same modules, loss as a loop over (code view, predicting view) pairs and samples
    obj.normalize_prototypes()
    reps = [enc(v)[1] for v in batch["views"]]
    z = F.normalize(obj.projector(torch.cat(reps)), dim=1).split(5)
    scores = [e @ obj.prototypes.weight.T for e in z]
    codes = [torch.from_numpy(reference_sinkhorn(s.detach().numpy(), 0.05, 3)).float() for s in scores[:2]]
    terms = [-(codes[i][b] * torch.log_softmax(scores[j][b] / 0.1, 0)).sum()
             for i in range(2) for j in range(len(scores)) if j != i for b in range(5)]
    grads = torch.autograd.grad(torch.stack(terms).mean(), params)
    expected = [p0 - lr * g for p0, g in zip(start, grads)]
    opt = torch.optim.SGD(params, lr=lr)
    loss, _ = obj(enc, batch, sched(0))
    loss.backward()
    opt.step()
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-4, atol=1e-6)
    obj(enc, batch, sched(1))
    torch.testing.assert_close(obj.prototypes.weight, F.normalize(expected[-1], dim=1))
