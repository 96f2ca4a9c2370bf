"""NNCLR: the loss against a per-anchor loop, the nearest-neighbour lookup against brute force, no gradient into
the neighbour, the support set after a step (and a skipped one) against a ring buffer written here, the queue
size check, and nn_acc on a hand-made support set."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.objectives.nnclr import NNCLR, nearest_neighbour, nn_hits, nnclr_loss


def cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def reference_nnclr(nn_a, p_b, temperature):
    """Plain loops: each neighbour against every prediction (its own is the positive), each prediction against
    every neighbour, the mean of the two cross-entropies."""
    nn_a, p_b = nn_a.tolist(), p_b.tolist()
    n = len(p_b)

    def ce(anchors, candidates):
        total = 0.0
        for i in range(n):
            logits = [cos(anchors[i], candidates[k]) / temperature for k in range(n)]
            total += -logits[i] + math.log(sum(math.exp(x) for x in logits))
        return total / n
    return (ce(nn_a, p_b) + ce(p_b, nn_a)) / 2


def brute_force_nn(z, support):
    """Index of the most cosine-similar support row, one anchor and one row at a time."""
    out = []
    for u in z.tolist():
        sims = [cos(u, v) for v in support.tolist()]
        out.append(max(range(len(sims)), key=sims.__getitem__))
    return out


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
    obj = NNCLR(enc, d, **({"projector": (32, 32, 16), "predictor": (32, 16)} | kw))
    return d, enc, obj


def tiny_batch(n=8, local=False, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 1, 8, 8, generator=g, dtype=dtype), torch.randn(n, 1, 8, 8, generator=g, dtype=dtype)]
    if local:
        views.append(torch.randn(n, 1, 4, 4, generator=g, dtype=dtype))
    return {"views": views, "y": torch.arange(n) % 3}


def capture(module):
    """The outputs of every call of `module`, in call order (the heads run once per view)."""
    out = []
    module.register_forward_hook(lambda m, i, o: out.append(o.detach().clone()))
    return out


# ---- the loss ----

@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("n,dim", [(1, 3), (4, 5), (7, 2)])
def test_loss_matches_reference(n, dim, temperature):
    g = torch.Generator().manual_seed(10 * n + dim)
    nn_a, p_b = torch.randn(2, n, dim, generator=g, dtype=torch.float64)
    got = nnclr_loss(nn_a, p_b, temperature).item()
    assert got == pytest.approx(reference_nnclr(nn_a, p_b, temperature), rel=1e-10, abs=1e-12)


def test_default_temperature_is_the_papers():
    g = torch.Generator().manual_seed(1)
    nn_a, p_b = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    assert nnclr_loss(nn_a, p_b).item() == pytest.approx(reference_nnclr(nn_a, p_b, 0.1), rel=1e-10)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_collapsed_embeddings_give_log_n(n):
    row = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    assert nnclr_loss(row.expand(n, -1), 3 * row.expand(n, -1)).item() == pytest.approx(math.log(n), abs=1e-10)


def test_symmetric_and_scale_invariant():
    g = torch.Generator().manual_seed(2)
    nn_a, p_b = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    scale = torch.rand(6, 1, generator=g, dtype=torch.float64) * 5 + 0.1
    ab = nnclr_loss(nn_a, p_b, 0.2).item()
    assert nnclr_loss(p_b, nn_a, 0.2).item() == pytest.approx(ab, rel=1e-12)
    assert nnclr_loss(nn_a * scale, p_b / scale, 0.2).item() == pytest.approx(ab, rel=1e-10)


def test_gradient_reaches_the_prediction_never_the_neighbour():
    g = torch.Generator().manual_seed(3)
    nn_a = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    p_b = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    nnclr_loss(nn_a, p_b).backward()
    assert nn_a.grad is None
    assert p_b.grad is not None and torch.isfinite(p_b.grad).all() and p_b.grad.abs().sum() > 0


# ---- the nearest neighbour and nn_acc ----

@pytest.mark.parametrize("b,q,dim", [(1, 1, 3), (6, 9, 4), (10, 40, 2)])
def test_nearest_neighbour_matches_brute_force(b, q, dim):
    g = torch.Generator().manual_seed(b + q + dim)
    z = torch.randn(b, dim, generator=g, dtype=torch.float64) * 3  # not unit: cosine, not dot product
    support = F.normalize(torch.randn(q, dim, generator=g, dtype=torch.float64), dim=1)
    idx, rows = nearest_neighbour(z, support)
    assert idx.tolist() == brute_force_nn(z, support)
    assert torch.equal(rows, support[idx])


def test_nearest_neighbour_carries_no_gradient():
    z = torch.randn(4, 3, requires_grad=True)
    _, rows = nearest_neighbour(z, F.normalize(torch.randn(5, 3), dim=1))
    assert not rows.requires_grad


def test_nn_hits_counts_only_known_pairs():
    y = torch.tensor([0, 1, 2, -1, 3, 4])
    y_nn = torch.tensor([0, 2, -1, 1, 3, 1])
    assert nn_hits(y, y_nn).tolist() == [2, 4]  # anchors 0 and 4 hit; 1 and 5 miss; 2 and 3 unknown


class Scripted(nn.Module):
    """A projector that returns prescribed projections, one tensor per call (view)."""

    def __init__(self, outs):
        super().__init__()
        self.outs = list(outs)

    def forward(self, r):
        return self.outs.pop(0)


def test_module_nn_acc_on_a_hand_made_support_set():
    d, enc, obj = tiny_setup(projector=(8, 4), predictor=(8, 4), queue_size=4)
    e = torch.eye(4)
    obj.queue.rows.copy_(e)
    obj.queue.labels.copy_(torch.tensor([0, 1, -1, 2]))
    z0 = torch.stack([e[0] + 0.1 * e[1], e[1], e[2], e[3]])  # neighbours e0 e1 e2 e3
    z1 = torch.stack([e[1], e[0], e[1], e[3]])  # neighbours e1 e0 e1 e3
    obj.projector = Scripted([z0, z1])
    batch = {"views": [torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)], "y": torch.tensor([0, 2, 1, -1])}
    _, logs = obj(enc, batch, {"step": 0})
    # view 0: hit (0=0), miss (2 vs 1), unknown neighbour, unknown anchor; view 1: miss, miss, hit (1=1), unknown
    assert logs["nn_acc"].item() == pytest.approx(2 / 5)
    assert logs["nn_cos"].item() == pytest.approx((1 / math.sqrt(1.01) + 7) / 8, rel=1e-6)


# ---- the module ----

def test_module_forward_logs_and_trains_every_head():
    d, enc, obj = tiny_setup()
    loss, logs = obj(enc, tiny_batch(), {"step": 0})
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs["rep"].shape == (8, 16) and not logs["rep"].requires_grad
    assert {"pos_cos", "nn_cos", "queue_fill"} <= logs.keys()
    assert "nn_acc" not in logs  # a fresh support set has no labels: nothing to score
    assert logs["queue_fill"].item() == 0 and len(obj.queue) == 50  # half of the 100 training samples
    loss.backward()
    for name, p in [*enc.named_parameters(), *obj.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert obj.projector(torch.randn(4, 16)).shape == (4, 16)  # the contract's projector: rep -> projection
    assert obj.collapse_hint and obj.batch_statistics


@pytest.mark.parametrize("local", [False, True])
def test_module_loss_matches_reference_over_view_pairs(local):
    d, enc, obj = tiny_setup()
    enc.double(), obj.double()
    z, p = capture(obj.projector), capture(obj.predictor)
    loss, logs = obj(enc, tiny_batch(local=local, dtype=torch.float64), {"step": 0})
    n_views = 3 if local else 2
    assert len(z) == len(p) == n_views
    support = obj.queue.rows
    nn = [support[brute_force_nn(z[i], support)] for i in range(2)]  # positives from the global views only
    pairs = [(i, j) for i in range(2) for j in range(n_views) if j != i]
    ref = sum(reference_nnclr(nn[i], p[j], 0.1) for i, j in pairs) / len(pairs)
    assert loss.item() == pytest.approx(ref, rel=1e-9)
    pos = np.mean([np.mean([cos(a, b) for a, b in zip(nn[i].tolist(), p[j].tolist())]) for i, j in pairs])
    assert logs["pos_cos"].item() == pytest.approx(pos, rel=1e-9)


def ring_write(rows, labels, ptr, new_rows, new_labels):
    """Reference FIFO: each new row overwrites the oldest slot, one at a time."""
    rows, labels = rows.clone(), labels.clone()
    for r, y in zip(new_rows, new_labels):
        rows[ptr], labels[ptr] = r, y
        ptr = (ptr + 1) % len(rows)
    return rows, labels, ptr


def test_one_step_enqueues_the_batch_projections_in_order():
    d, enc, obj = tiny_setup()
    obj.queue.ptr.fill_(47)  # 8 rows from slot 47 wrap around the 50 slots
    before_rows, before_labels = obj.queue.rows.clone(), obj.queue.labels.clone()
    opt = torch.optim.SGD([*enc.parameters(), *obj.parameters()], lr=0.1)
    z = capture(obj.projector)
    batch = tiny_batch()
    loss, _ = obj(enc, batch, {"step": 0})
    loss.backward()
    opt.step()
    obj.after_step(enc, {"step": 0})
    rows, labels, ptr = ring_write(before_rows, before_labels, 47, F.normalize(z[0], dim=1), batch["y"])
    torch.testing.assert_close(obj.queue.rows, rows, rtol=0, atol=1e-7)
    assert torch.equal(obj.queue.labels, labels) and int(obj.queue.ptr) == ptr == 5
    assert int(obj.queue.filled) == 8
    _, logs = obj(enc, tiny_batch(seed=1), {"step": 1})
    assert logs["queue_fill"].item() == pytest.approx(8 / 50)


def test_a_skipped_step_leaves_its_rows_out():
    d, enc, obj = tiny_setup()
    before_rows, before_labels = obj.queue.rows.clone(), obj.queue.labels.clone()
    z = capture(obj.projector)
    obj(enc, tiny_batch(seed=1), {"step": 1})  # the engine skips this step: no after_step
    skipped = F.normalize(z[0], dim=1)
    b2 = tiny_batch(seed=2)
    b2["y"] = b2["y"] + 10
    obj(enc, b2, {"step": 2})
    obj.after_step(enc, {"step": 2})
    rows, labels, _ = ring_write(before_rows, before_labels, 0, F.normalize(z[2], dim=1), b2["y"])
    torch.testing.assert_close(obj.queue.rows, rows, rtol=0, atol=1e-7)
    assert torch.equal(obj.queue.labels, labels) and int(obj.queue.filled) == 8
    assert torch.cdist(skipped, obj.queue.rows).min() > 1e-3  # no row of the skipped step anywhere


def test_queue_size_defaults_to_half_the_training_set_up_to_the_papers():
    assert len(tiny_setup(n=100)[2].queue) == 50
    assert len(tiny_setup(n=10**6, projector=(8, 4), predictor=(8, 4))[2].queue) == 98304


@pytest.mark.parametrize("size", [100, 150])
def test_queue_not_shorter_than_the_training_set_is_a_one_line_error(size):
    with pytest.raises(UserError) as e:
        tiny_setup(n=100, queue_size=size)
    msg = str(e.value)
    assert "\n" not in msg and f"queue_size={size}" in msg and "100 samples" in msg


def test_predictor_must_end_at_the_projector_width():
    with pytest.raises(UserError, match="predictor"):
        tiny_setup(projector=(32, 16), predictor=(32, 8))
