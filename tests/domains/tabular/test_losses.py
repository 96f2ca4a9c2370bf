"""VIME's losses against loop references, and the domain's reconstruction loss in both mask modes."""
import math

import numpy as np
import pytest
import torch

from multissl.domains.tabular import TabularDomain
from multissl.domains.tabular.losses import feature_reconstruction_loss, mask_prediction_loss, vime_loss


def ref_recon(pred, target, scored, vocab):
    """Loop reference: mean over scored cells with a known target of the squared error (numeric) or
    -log softmax over the first V_j category logits at the true class (categorical)."""
    total, n = 0.0, 0
    for b in range(target.shape[0]):
        for j in range(target.shape[1]):
            t = target[b, j]
            if not scored[b, j] or math.isnan(t) or (vocab[j] and t < 2):
                continue
            if vocab[j]:
                logits = pred[b, j, 1:1 + vocab[j]]
                total += math.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[int(t) - 2]
            else:
                total += (pred[b, j, 0] - t) ** 2
            n += 1
    return total / max(n, 1)


def ref_bce(logit, label):
    p = 1 / (1 + np.exp(-logit))
    return float(-(label * np.log(p) + (1 - label) * np.log(1 - p)).mean())


def loss_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    vocab = [0, 3, 0, 5, 2]  # numeric, 3-way, numeric, 5-way, 2-way
    b, n, t = 6, 5, 1 + 5 + 1
    target = torch.randn(b, n, generator=g, dtype=torch.float64)
    for j, v in enumerate(vocab):
        if v:
            target[:, j] = torch.randint(0, v + 2, (b,), generator=g).double()  # includes unknown 0, missing 1
    target[0, 0] = target[3, 2] = float("nan")
    pred = torch.randn(b, n, t, generator=g, dtype=torch.float64, requires_grad=True)
    masked = torch.stack([torch.randperm(n, generator=g)[:3] for _ in range(b)])
    return pred, target, masked, vocab


def test_feature_reconstruction_loss_matches_loop_reference():
    pred, target, masked, vocab = loss_case()
    scored = torch.zeros(target.shape, dtype=torch.bool).scatter(1, masked, True)
    got = feature_reconstruction_loss(pred, target, scored, torch.tensor(vocab))
    want = ref_recon(pred.detach().numpy(), target.numpy(), scored.numpy(), vocab)
    assert got.item() == pytest.approx(want, rel=1e-10)
    got.backward()
    assert torch.isfinite(pred.grad).all()  # numeric columns' masked logits do not leak NaN into the gradient
    # logits past a column's own vocabulary do not count
    far = pred.detach().clone()
    far[:, 1, 4:6] = 1e3
    assert feature_reconstruction_loss(far, target, scored, torch.tensor(vocab)).item() == pytest.approx(got.item())


def test_feature_reconstruction_loss_takes_numeric_values_beyond_every_vocabulary():
    """A standardized outlier (income, a price) is larger than any category id: still a squared error."""
    pred, target, _, vocab = loss_case()
    target[:, 0] = torch.tensor([40.0, 9.0, -30.0, 7.5, 100.0, 3.0], dtype=torch.float64)
    scored = torch.ones(target.shape, dtype=torch.bool)
    got = feature_reconstruction_loss(pred, target, scored, torch.tensor(vocab))
    assert got.item() == pytest.approx(ref_recon(pred.detach().numpy(), target.numpy(), scored.numpy(), vocab),
                                       rel=1e-10)


def test_mask_prediction_loss_matches_reference():
    pred, _, masked, _ = loss_case(1)
    was = torch.zeros(6, 5, dtype=torch.bool).scatter(1, masked, True)
    got = mask_prediction_loss(pred[..., -1].detach(), was).item()
    assert got == pytest.approx(ref_bce(pred[..., -1].detach().numpy(), was.numpy().astype(float)), rel=1e-10)


def test_vime_loss_is_reconstruction_plus_weighted_mask_loss():
    pred, target, masked, vocab = loss_case(2)
    pred = pred.detach()
    was = np.zeros((6, 5), bool)
    np.put_along_axis(was, masked.numpy(), True, 1)
    want = ref_recon(pred.numpy(), target.numpy(), was, vocab) + 0.5 * ref_bce(pred[..., -1].numpy(), was.astype(float))
    assert vime_loss(pred, target, masked, torch.tensor(vocab), 0.5).item() == pytest.approx(want, rel=1e-10)


def test_domain_loss_ignores_unmasked_targets(cancer):
    g = torch.Generator().manual_seed(0)
    target = cancer.dataset("train").x[:4].double()
    keep, masked = cancer.mask(4, g)
    pred = torch.randn(4, 30, cancer.target_dim, generator=g, dtype=torch.float64)
    before = cancer.reconstruction_loss(pred, target, masked).item()
    changed = target.clone()
    was = torch.zeros(4, 30, dtype=torch.bool).scatter(1, masked, True)
    changed[~was] = 1e3
    assert cancer.reconstruction_loss(pred, changed, masked).item() == before
    assert cancer.target_dim == 2 and torch.equal(cancer.target(target), target)


def test_drop_mode_scores_reconstruction_only(cancer):
    """In drop mode the decoder sees mask tokens at the masked positions: 'which were masked' is given, so
    the mask-estimation term would be free and is left out."""
    drop = TabularDomain(data={}, mask_mode="drop", state=cancer.state())
    g = torch.Generator().manual_seed(0)
    target = cancer.dataset("train").x[:4].double()
    _, masked = drop.mask(4, g)
    pred = torch.randn(4, 30, drop.target_dim, generator=g, dtype=torch.float64)
    was = torch.zeros(4, 30, dtype=torch.bool).scatter(1, masked, True)
    recon = feature_reconstruction_loss(pred, target, was, torch.tensor(drop.vocab_sizes)).item()
    assert drop.reconstruction_loss(pred, target, masked).item() == pytest.approx(recon, rel=1e-12)
    assert cancer.reconstruction_loss(pred, target, masked).item() > recon  # marginal mode adds the mask term
