"""Health signals against independent references: weighted kNN, RankMe, embedding std, online probe."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from multissl.monitor import OnlineProbe, embedding_std, knn_accuracy, rankme


def reference_knn(train_x, train_y, test_x, test_y, k, temperature):
    """Per query: cosine similarity to every train sample, the k most similar vote exp(sim/T)."""
    tr, te = train_x.tolist(), test_x.tolist()
    tr_y, te_y = train_y.tolist(), test_y.tolist()

    def cos(u, v):
        return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))

    correct = 0
    for q, yq in zip(te, te_y):
        sims = sorted(((cos(q, t), j) for j, t in enumerate(tr)), reverse=True)[:k]
        votes = {}
        for s, j in sims:
            votes[tr_y[j]] = votes.get(tr_y[j], 0.0) + math.exp(s / temperature)
        correct += max(votes, key=votes.get) == yq
    return correct / len(te)


@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knn_matches_reference(seed, temperature):
    g = torch.Generator().manual_seed(seed)
    train_x, test_x = torch.randn(40, 5, generator=g), torch.randn(25, 5, generator=g)
    train_y, test_y = torch.randint(0, 4, (40,), generator=g), torch.randint(0, 4, (25,), generator=g)
    got = knn_accuracy(train_x, train_y, test_x, test_y, k=3, temperature=temperature)
    assert got == pytest.approx(reference_knn(train_x, train_y, test_x, test_y, 3, temperature))


def test_knn_k_larger_than_train_set():
    g = torch.Generator().manual_seed(5)
    train_x, test_x = torch.randn(6, 3, generator=g), torch.randn(10, 3, generator=g)
    train_y, test_y = torch.randint(0, 2, (6,), generator=g), torch.randint(0, 2, (10,), generator=g)
    got = knn_accuracy(train_x, train_y, test_x, test_y, k=50, temperature=0.3)
    assert got == pytest.approx(reference_knn(train_x, train_y, test_x, test_y, 6, 0.3))


def test_knn_separated_clusters_is_perfect():
    g = torch.Generator().manual_seed(0)
    centers = torch.eye(4) * 10
    train_y, test_y = torch.arange(4).repeat(10), torch.arange(4).repeat(5)
    train_x = centers[train_y] + 0.1 * torch.randn(40, 4, generator=g)
    test_x = centers[test_y] + 0.1 * torch.randn(20, 4, generator=g)
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=3, temperature=0.07) == 1.0
    # and with permuted test labels it cannot be perfect
    assert knn_accuracy(train_x, train_y, test_x, (test_y + 1) % 4, k=3) == 0.0


def reference_rankme(z: np.ndarray) -> float:
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


@pytest.mark.parametrize("n,d", [(30, 8), (8, 20), (50, 3)])
def test_rankme_matches_reference(n, d):
    z = np.random.default_rng(n * d).normal(size=(n, d)) * np.linspace(0.1, 3, d)
    assert rankme(torch.tensor(z, dtype=torch.float32)) == pytest.approx(reference_rankme(z), rel=1e-4)


def test_rankme_extremes():
    g = torch.Generator().manual_seed(0)
    rank1 = torch.randn(50, 1, generator=g) @ torch.randn(1, 16, generator=g)
    assert rankme(rank1) == pytest.approx(1.0, abs=1e-3)
    assert rankme(torch.eye(12)) == pytest.approx(12.0, rel=1e-4)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
    assert rankme(q) == pytest.approx(10.0, rel=1e-4)


def test_embedding_std():
    v = torch.randn(1, 8)
    collapsed = torch.rand(20, 1) * 5 + 0.1  # same direction, different lengths
    assert embedding_std(collapsed * v) == pytest.approx(0.0, abs=1e-6)
    spread = torch.randn(20000, 16, generator=torch.Generator().manual_seed(0))
    assert embedding_std(spread) == pytest.approx(1 / math.sqrt(16), rel=0.03)


def test_online_probe_trains_only_itself():
    torch.manual_seed(0)
    outside = nn.Linear(4, 6)
    outside_before = [p.detach().clone() for p in outside.parameters()]
    probe = OnlineProbe(6, 3, lr=0.1)
    fc_w, fc_b = probe.fc.weight.detach().clone(), probe.fc.bias.detach().clone()

    rep = outside(torch.randn(10, 4))
    assert rep.requires_grad
    y = torch.tensor([0, 1, 2, -1, 0, 1, 2, -1, 0, 1])  # -1 = unlabeled, ignored

    # reference loss: BatchNorm (batch statistics, biased variance, no affine) then the linear layer,
    # over the labeled rows only, with the weights before the step
    r = rep.detach()[y >= 0].double()
    normed = (r - r.mean(0)) / torch.sqrt(r.var(0, unbiased=False) + probe.norm.eps)
    logits = normed @ fc_w.double().T + fc_b.double()
    lab = y[y >= 0]
    want = -(logits.log_softmax(1)[torch.arange(len(lab)), lab]).mean().item()

    logs = probe.step(rep, y)
    assert logs["probe_loss"] == pytest.approx(want, rel=1e-5)
    assert 0.0 <= logs["probe_acc"] <= 1.0
    assert not torch.equal(probe.fc.weight, fc_w) and not torch.equal(probe.fc.bias, fc_b)
    for p, before in zip(outside.parameters(), outside_before):
        assert p.grad is None
        assert torch.equal(p, before)


def test_online_probe_needs_two_labels():
    probe = OnlineProbe(4, 2)
    w = probe.fc.weight.detach().clone()
    assert probe.step(torch.randn(3, 4), torch.tensor([-1, 1, -1])) == {}
    assert torch.equal(probe.fc.weight, w)
