"""Mean Shift: the loss against a per-neighbour loop and its invariants, the kNN lookup against brute force, the bank
with the step's targets enqueued against a ring buffer written here, no gradient into the target or the neighbours,
the module's loss against a reference (k=1 is byol's), the bank after a step (and a skipped one), the teacher's EMA
after one optimizer step, purity on a hand-made bank, and the size checks."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.objectives.byol import byol_loss
from multissl.objectives.meanshift import MeanShift, bank_after, meanshift_loss, nearest_neighbours


def cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def reference_loss(query, neighbours):
    """Plain loops: each query against each of its neighbours, 2 - 2 cos (the squared distance of unit vectors)."""
    total, count = 0.0, 0
    for q, row in zip(query.tolist(), neighbours.tolist()):
        for nb in row:
            total += 2 - 2 * cos(q, nb)
            count += 1
    return total / count


def brute_force_knn(target, bank, k):
    """The k bank rows of smallest squared Euclidean distance to each unit target, one pair at a time."""
    out = []
    for t in F.normalize(target, dim=1).tolist():
        d = [sum((a - b) ** 2 for a, b in zip(t, row)) for row in bank.tolist()]
        out.append(sorted(range(len(d)), key=d.__getitem__)[:k])
    return out


def ring_write(rows, ptr, new):
    """Reference FIFO: each new row overwrites the oldest slot, one at a time."""
    rows = rows.clone()
    for r in new:
        rows[ptr] = r
        ptr = (ptr + 1) % len(rows)
    return rows, ptr


class SmallImages(ImageDomain):
    """The image domain without loading digits: a training set of `n` placeholder items (only its size is read)."""

    def __init__(self, n=100):
        super().__init__(image_size=8, channels=1, patch_size=2)
        self.mean, self.std, self.n = [0.5], [0.25], n

    def dataset(self, split):
        return range(self.n)


def tiny_setup(seed=0, n=100, **kw):
    torch.manual_seed(seed)
    d = SmallImages(n)
    enc = Encoder(d, dim=16, depth=1, heads=2)
    obj = MeanShift(enc, d, **({"projector": (32, 16), "predictor": (32, 16)} | kw))
    return d, enc, obj


def tiny_batch(n=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 1, 8, 8, generator=g, dtype=dtype), torch.randn(n, 1, 8, 8, generator=g, dtype=dtype)]
    return {"views": views, "y": torch.arange(n) % 3}


def sched(step=0, ema=0.9, total=10):
    return {"step": step, "ema": ema, "total_steps": total}


def capture(module):
    """The outputs of every call of `module`, in call order."""
    out = []
    module.register_forward_hook(lambda m, i, o: out.append(o.detach().clone()))
    return out


# ---- the loss ----

@pytest.mark.parametrize("b,k,dim", [(1, 1, 3), (4, 5, 6), (7, 3, 2)])
def test_loss_matches_reference(b, k, dim):
    g = torch.Generator().manual_seed(10 * b + k + dim)
    query = torch.randn(b, dim, generator=g, dtype=torch.float64) * 3  # not unit: the loss normalises
    neighbours = torch.randn(b, k, dim, generator=g, dtype=torch.float64)
    got = meanshift_loss(query, neighbours).item()
    assert got == pytest.approx(reference_loss(query, neighbours), rel=1e-10, abs=1e-12)


def test_zero_when_aligned_four_when_opposite_two_when_orthogonal():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(5, 4, generator=g, dtype=torch.float64)
    scale = torch.rand(5, 3, 1, generator=g, dtype=torch.float64) * 5 + 0.1
    aligned = q[:, None] * scale  # [5 3 4]
    assert meanshift_loss(q, aligned).item() == pytest.approx(0.0, abs=1e-12)
    assert meanshift_loss(q, -aligned).item() == pytest.approx(4.0, abs=1e-12)
    e = torch.eye(2, dtype=torch.float64)
    assert meanshift_loss(e, e.flip(0)[:, None].expand(2, 4, 2)).item() == pytest.approx(2.0, abs=1e-12)


def test_one_neighbour_is_byols_loss():
    g = torch.Generator().manual_seed(2)
    p, z = torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    assert meanshift_loss(p, z[:, None]).item() == pytest.approx(byol_loss(p, z).item(), rel=1e-12)


def test_gradient_reaches_the_query_never_the_neighbours():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    nb = torch.randn(5, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    meanshift_loss(q, nb).backward()
    assert nb.grad is None
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


# ---- the lookup and the bank ----

@pytest.mark.parametrize("b,q,dim,k", [(1, 1, 3, 1), (6, 9, 4, 5), (10, 40, 2, 3)])
def test_nearest_neighbours_match_brute_force(b, q, dim, k):
    g = torch.Generator().manual_seed(b + q + dim)
    target = torch.randn(b, dim, generator=g, dtype=torch.float64) * 3
    bank = F.normalize(torch.randn(q, dim, generator=g, dtype=torch.float64), dim=1)
    idx = nearest_neighbours(target, bank, k)
    assert idx.tolist() == brute_force_knn(target, bank, k)


def test_nearest_neighbours_carry_no_gradient():
    t = torch.randn(4, 3, requires_grad=True)
    bank = F.normalize(torch.randn(6, 3), dim=1)
    idx = nearest_neighbours(t, bank, 2)
    assert not bank[idx].requires_grad and not idx.requires_grad


@pytest.mark.parametrize("ptr,n", [(0, 3), (8, 5), (2, 10), (9, 13)])  # no wrap, wrap, full, longer than the bank
def test_bank_after_is_a_ring_write(ptr, n):
    g = torch.Generator().manual_seed(ptr + n)
    rows, new = torch.randn(10, 3, generator=g), torch.randn(n, 3, generator=g)
    # a batch longer than the bank keeps its last 10 rows, written from the pointer (as Queue.commit does)
    assert torch.equal(bank_after(rows, ptr, new), ring_write(rows, ptr, new[-10:])[0])
    labels, new_y = torch.arange(10), torch.arange(100, 100 + n)
    assert torch.equal(bank_after(labels, ptr, new_y), ring_write(labels, ptr, new_y[-10:])[0])


# ---- the module ----

def test_module_forward_logs_and_trains_every_head_not_the_teacher():
    _, enc, obj = tiny_setup()
    loss, logs = obj(enc, tiny_batch(), sched())
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs["rep"].shape == (8, 16) and not logs["rep"].requires_grad
    assert {"cos", "target_cos", "nn_cos", "bank_fill", "purity"} <= logs.keys()
    assert logs["bank_fill"].item() == 0 and len(obj.bank) == 50  # half of the 100 training samples
    loss.backward()
    for name, p in [*enc.named_parameters(), *obj.projector.named_parameters(), *obj.predictor.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(not p.requires_grad and p.grad is None for p in obj.teacher.parameters())
    assert obj.projector(torch.randn(4, 16)).shape == (4, 16)
    online, target = obj.branches(enc, tiny_batch())
    assert online.shape == target.shape == (8, 16)
    assert obj.collapse_hint and "objective.topk" in obj.collapse_hint


@pytest.mark.parametrize("k", [1, 5])
def test_module_loss_matches_reference(k):
    _, enc, obj = tiny_setup(topk=k)
    enc.double(), obj.double()
    obj.bank.ptr.fill_(47)  # the batch's 8 targets wrap around the 50 slots
    query, target = capture(obj.predictor), capture(obj.teacher.nets[1])
    bank = obj.bank.rows.clone()
    loss, logs = obj(enc, tiny_batch(dtype=torch.float64), sched())
    t = F.normalize(target[0], dim=1)
    cand, _ = ring_write(bank, 47, t)  # the targets join the candidates before the lookup
    idx = brute_force_knn(t, cand, k)
    assert [row[0] for row in idx] == [(47 + i) % 50 for i in range(8)]  # each target is its own nearest
    ref = reference_loss(query[0], cand[torch.tensor(idx)])
    assert loss.item() == pytest.approx(ref, rel=1e-9)
    assert logs["cos"].item() == pytest.approx(1 - ref / 2, rel=1e-9)
    byol = byol_loss(query[0], t).item()
    assert logs["target_cos"].item() == pytest.approx(1 - byol / 2, rel=1e-9)
    if k == 1:
        assert loss.item() == pytest.approx(byol, rel=1e-9)


def test_no_gradient_into_the_target_or_the_bank():
    _, enc, obj = tiny_setup()
    loss, _ = obj(enc, tiny_batch(), sched())
    loss.backward()
    assert not obj.bank.rows.requires_grad and obj.bank.rows.grad is None
    assert all(not r.requires_grad for _, r, _ in obj.bank.pending)
    assert all(p.grad is None for p in obj.teacher.parameters())


def test_purity_on_a_hand_made_bank():
    _, enc, obj = tiny_setup(projector=(8, 4), predictor=(8, 4), topk=2, bank_size=6)
    e = torch.eye(4)
    bank = torch.stack([e[0], e[1], e[2], e[3], -e[0], -e[1]])
    obj.bank.rows.copy_(bank)
    obj.bank.labels.copy_(torch.tensor([0, 1, -1, 2, 5, 5]))
    obj.bank.ptr.fill_(4)  # the 2 targets overwrite the -e0, -e1 slots
    t = torch.stack([e[0] + 0.1 * e[1], e[2] + 0.1 * e[3]])  # neighbours: itself (label y), then e0 / e2

    class Scripted(nn.Module):
        def forward(self, r):
            return t
    obj.teacher.nets[1] = Scripted()
    batch = {"views": [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)], "y": torch.tensor([0, 2])}
    _, logs = obj(enc, batch, sched())
    # sample 0: itself (0 = 0) and e0 (0 = 0); sample 1: itself (2 = 2) and e2 (label unknown, not counted)
    assert logs["purity"].item() == pytest.approx(3 / 3)
    batch["y"] = torch.tensor([1, -1])
    _, logs = obj(enc, batch, sched())
    assert logs["purity"].item() == pytest.approx(1 / 2)  # sample 0: itself hits, e0 misses; sample 1 unknown
    assert logs["nn_cos"].item() == pytest.approx((1 + 1 / math.sqrt(1.01)) / 2, rel=1e-6)


def test_one_step_enqueues_the_targets_and_moves_the_teacher():
    _, enc, obj = tiny_setup()
    obj.bank.ptr.fill_(47)
    before = obj.bank.rows.clone()
    before_labels = obj.bank.labels.clone()
    teacher = [p.detach().clone() for p in obj.teacher.parameters()]
    opt = torch.optim.SGD([p for p in [*enc.parameters(), *obj.parameters()] if p.requires_grad], lr=0.1)
    target = capture(obj.teacher.nets[1])
    batch = tiny_batch()
    loss, _ = obj(enc, batch, sched())
    loss.backward()
    opt.step()
    student = [p.detach().clone() for p in [*enc.parameters(), *obj.projector.parameters()]]
    obj.after_step(enc, sched(ema=0.9))
    rows, ptr = ring_write(before, 47, F.normalize(target[0], dim=1))
    labels, _ = ring_write(before_labels, 47, batch["y"])
    torch.testing.assert_close(obj.bank.rows, rows, rtol=0, atol=1e-7)
    assert torch.equal(obj.bank.labels, labels) and int(obj.bank.ptr) == ptr == 5 and int(obj.bank.filled) == 8
    # the teacher: 0.9 x itself + 0.1 x the student after the optimizer step
    assert len(teacher) == len(student)
    for new, old, s in zip(obj.teacher.parameters(), teacher, student):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * s, rtol=1e-6, atol=1e-7)
    _, logs = obj(enc, tiny_batch(seed=1), sched(step=1))
    assert logs["bank_fill"].item() == pytest.approx(8 / 50)


def test_own_momentum_is_a_cosine_to_one():
    _, enc, obj = tiny_setup(momentum=0.6)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(1.0)
    teacher = [p.detach().clone() for p in obj.teacher.nets[0].parameters()]
    obj.after_step(enc, sched(step=5, total=10, ema=0.1))  # half way: 0.8, the engine's 0.1 unused
    for new, old, s in zip(obj.teacher.nets[0].parameters(), teacher, enc.parameters()):
        torch.testing.assert_close(new, 0.8 * old + 0.2 * s.detach(), rtol=1e-6, atol=1e-7)


def test_a_skipped_step_leaves_its_targets_out():
    _, enc, obj = tiny_setup()
    before = obj.bank.rows.clone()
    target = capture(obj.teacher.nets[1])
    obj(enc, tiny_batch(seed=1), sched(step=1))  # the engine skips this step: no after_step
    skipped = F.normalize(target[0], dim=1)
    b2 = tiny_batch(seed=2)
    obj(enc, b2, sched(step=2))
    obj.after_step(enc, sched(step=2))
    rows, _ = ring_write(before, 0, F.normalize(target[1], dim=1))
    torch.testing.assert_close(obj.bank.rows, rows, rtol=0, atol=1e-7)
    assert int(obj.bank.filled) == 8 and int(obj.bank.ptr) == 8
    assert torch.cdist(skipped, obj.bank.rows).min() > 1e-3  # no row of the skipped step anywhere


# ---- sizes ----

def test_bank_size_defaults_to_half_the_training_set_up_to_the_officials():
    assert len(tiny_setup(n=100)[2].bank) == 50
    assert len(tiny_setup(n=10**6, projector=(8, 4), predictor=(8, 4))[2].bank) == 128000


@pytest.mark.parametrize("size", [100, 150])
def test_bank_not_shorter_than_the_training_set_is_a_one_line_error(size):
    with pytest.raises(UserError) as e:
        tiny_setup(n=100, bank_size=size)
    msg = str(e.value)
    assert "\n" not in msg and f"bank_size={size}" in msg and "100 samples" in msg


def test_topk_beyond_the_bank_and_a_mismatched_predictor_are_errors():
    with pytest.raises(UserError, match="topk=7"):
        tiny_setup(n=100, bank_size=6, topk=7)
    with pytest.raises(UserError, match="topk=0"):
        tiny_setup(topk=0)
    with pytest.raises(UserError, match="predictor"):
        tiny_setup(projector=(32, 16), predictor=(32, 8))
