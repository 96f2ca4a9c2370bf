"""Downstream probes: the tabular scores against scikit-learn by hand, the rl state probe against a
hand-written ridge."""
import numpy as np
import pytest

from multissl.domains.probes import downstream_scores, state_r2


def test_downstream_scores_against_sklearn_by_hand():
    from sklearn.ensemble import HistGradientBoostingClassifier
    r = np.random.default_rng(1)
    raw = np.c_[r.normal(size=(120, 2)), r.integers(1, 5, 120)].astype(np.float32)  # last column: category ids
    y = ((raw[:, 0] > 0) ^ (raw[:, 2] == 3)).astype(int)
    emb = r.normal(size=(120, 3))
    cat = np.array([False, False, True])
    got = downstream_scores(raw[:90], emb[:90], y[:90], raw[90:], emb[90:], y[90:], cat, True)
    hgb = HistGradientBoostingClassifier(categorical_features=[2], random_state=0).fit(raw[:90], y[:90])
    assert got["gbdt_raw"] == pytest.approx((hgb.predict(raw[90:]) == y[90:]).mean())


def ridge_r2_reference(e_tr, s_tr, e_te, s_te, alpha):
    """By hand: centre features on the training mean and divide them all by one number, the training RMS
    around it; closed-form ridge w = (X'X + alpha I)^-1 X'y on centred targets, intercept = training mean;
    R^2 = 1 - SS_res / SS_tot per variable."""
    mu = e_tr.mean(0)
    rms = np.sqrt(((e_tr - mu) ** 2).sum() / e_tr.size)
    x_tr, x_te = (e_tr - mu) / rms, (e_te - mu) / rms
    w = np.linalg.solve(x_tr.T @ x_tr + alpha * np.eye(x_tr.shape[1]), x_tr.T @ (s_tr - s_tr.mean(0)))
    pred = x_te @ w + s_tr.mean(0)
    return 1 - ((s_te - pred) ** 2).sum(0) / ((s_te - s_te.mean(0)) ** 2).sum(0)


def test_state_r2_matches_a_hand_written_ridge():
    g = np.random.default_rng(0)
    e = g.normal(size=(300, 6)) * np.array([1, 2, 3, 0.5, 1, 10])  # dimensions on different scales
    s = np.stack([e @ g.normal(size=6), e[:, 0] ** 2, g.normal(size=300)], 1)  # linear, nonlinear, unrelated
    got = state_r2(e[:200], s[:200], e[200:], s[200:], alpha=3.0)
    np.testing.assert_allclose(got, ridge_r2_reference(e[:200], s[:200], e[200:], s[200:], 3.0), rtol=1e-6, atol=1e-8)
    assert got[0] > 0.99 and got[1] < 0.2 and got[2] < 0.05  # invariants: readable, not linear, noise
    # the probe does not depend on the embedding's units
    np.testing.assert_allclose(state_r2(e[:200] * 1e3 + 5, s[:200], e[200:] * 1e3 + 5, s[200:], 3.0), got, rtol=1e-6)


def test_state_r2_survives_units_that_almost_never_fire_in_training():
    """ReLU embeddings have units active on a handful of training steps; standardizing each unit by its own tiny
    std made their test activations huge outliers (R^2 far below 0 on a trained Nature-CNN). Scaled as a whole,
    they keep a small weight."""
    g = np.random.default_rng(0)
    e = g.normal(size=(400, 8))
    s = e[:, :2] @ np.array([[1.0, 0.5], [-0.5, 1.0]])
    rare = np.zeros((400, 4))
    rare[:2] = 1e-3 * g.random((2, 4))   # active on 2 of the 300 training rows, barely
    rare[300:] = g.random((100, 4))      # active on every held-out row
    e = np.concatenate([e, rare], 1)
    got = state_r2(e[:300], s[:300], e[300:], s[300:], alpha=1.0)
    assert (got > 0.95).all(), got
