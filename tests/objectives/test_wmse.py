"""W-MSE: the whitening by its defining property (identity covariance) and against a Cholesky written with loops;
the loss against a loop reference that cuts the step-seeded permutation itself; invariants (identical views,
Cholesky whitening's equivariance, the step's permutation, small batches); and module smoke tests."""
import math

import pytest
import torch
from torch import nn

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.objectives.wmse import WMSE, sub_batches, whiten, wmse_loss


# ---- independent reference (pure python loops) ----------------------------------------------------------------
def ref_cholesky(a):
    """Lower-triangular L with L L^T = a, row by row (Cholesky-Banachiewicz)."""
    d = len(a)
    low = [[0.0] * d for _ in range(d)]
    for i in range(d):
        for j in range(i + 1):
            s = sum(low[i][k] * low[j][k] for k in range(j))
            low[i][j] = math.sqrt(a[i][i] - s) if i == j else (a[i][j] - s) / low[j][j]
    return low


def ref_whiten(rows, eps=0.0):
    """Centre, unbiased covariance shrunk to (1 - eps) C + eps I, then each row y solves L y = x by forward
    substitution."""
    n, d = len(rows), len(rows[0])
    mean = [sum(r[k] for r in rows) / n for k in range(d)]
    xc = [[r[k] - mean[k] for k in range(d)] for r in rows]
    cov = [[(1 - eps) * sum(x[i] * x[j] for x in xc) / (n - 1) + (eps if i == j else 0.0) for j in range(d)]
           for i in range(d)]
    low = ref_cholesky(cov)
    out = []
    for x in xc:
        y = [0.0] * d
        for i in range(d):
            y[i] = (x[i] - sum(low[i][k] * y[k] for k in range(i))) / low[i][i]
        out.append(y)
    return out


def ref_parts(n, w_size, step):
    """The step-seeded permutation (torch's randperm, the documented draw) cut by hand into max(1, n // w_size)
    consecutive parts, the first n % parts of them one longer."""
    k = max(1, n // w_size)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(step)).tolist()
    sizes = [n // k + (1 if p < n % k else 0) for p in range(k)]
    return [perm[sum(sizes[:p]):sum(sizes[:p + 1])] for p in range(k)]


def ref_wmse(views, step=0, w_size=128, w_iter=1, w_eps=0.0):
    views = [v.tolist() for v in views]
    n = len(views[0])
    g = torch.Generator().manual_seed(step)
    total = 0.0
    pairs = [(i, j) for i in range(len(views)) for j in range(i + 1, len(views))]
    for _ in range(w_iter):
        perm = torch.randperm(n, generator=g).tolist()
        k = max(1, n // w_size)
        sizes = [n // k + (1 if p < n % k else 0) for p in range(k)]
        for p in range(k):
            idx = perm[sum(sizes[:p]):sum(sizes[:p + 1])]
            w = [ref_whiten([v[r] for r in idx], w_eps) for v in views]
            for i, j in pairs:
                for a, b in zip(w[i], w[j]):
                    cos = sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
                    total += 2 - 2 * cos
    return total / (n * len(pairs) * w_iter)


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def correlated(n, d, seed=0):
    """Rows with a full, far-from-identity covariance and a non-zero mean."""
    mix = rand(d, d, seed=seed + 1000) + 2 * torch.eye(d, dtype=torch.float64)
    return rand(n, d, seed=seed) @ mix + 3.0


# ---- the whitening ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,d", [(5, 2), (12, 4), (40, 8)])
def test_whitened_sub_batch_has_identity_covariance(n, d):
    w = whiten(correlated(n, d, seed=n))
    assert torch.allclose(w.mean(0), torch.zeros(d, dtype=torch.float64), atol=1e-12)
    cov = w.T @ w / (n - 1)
    torch.testing.assert_close(cov, torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-10)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("n,d", [(6, 3), (17, 5)])
def test_whiten_matches_loop_cholesky(n, d, eps):
    x = correlated(n, d, seed=d)
    torch.testing.assert_close(whiten(x, eps), torch.tensor(ref_whiten(x.tolist(), eps), dtype=torch.float64),
                               rtol=0, atol=1e-10)


def test_whiten_is_equivariant_to_triangular_maps():
    """x M + c with M upper-triangular, positive diagonal (per-dimension scales among them): L becomes M^T L, so the
    whitened rows do not change at all. A Cholesky whitening, not any whitening."""
    x = correlated(10, 4, seed=3)
    m = torch.triu(rand(4, 4, seed=4)) + torch.diag(torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64))
    m.diagonal().abs_()
    torch.testing.assert_close(whiten(x @ m - 7.0), whiten(x), rtol=0, atol=1e-10)
    rot = torch.linalg.qr(rand(4, 4, seed=5))[0]
    assert not torch.allclose(whiten(x @ rot), whiten(x), atol=1e-3)  # a rotation is not triangular


def test_whiten_fails_soft_where_no_cholesky_exists():
    x = rand(8, 3, seed=6)
    x[:, 2] = x[:, 1]  # rank-deficient covariance: NaN rows (a skipped step), not an exception
    assert torch.isnan(whiten(x)).all()
    assert torch.isfinite(whiten(x, eps=0.05)).all()  # the shrinkage makes it positive definite


def test_whiten_runs_in_float32_under_bf16_autocast():
    x = correlated(16, 4).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = whiten(x.bfloat16())
    assert w.dtype == torch.float32
    torch.testing.assert_close(w.T @ w / 15, torch.eye(4), rtol=0, atol=0.05)


# ---- the loss ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,d,w_size,w_iter,step", [
    (16, 3, 8, 1, 0),   # two sub-batches of the paper's form
    (20, 3, 8, 2, 5),   # 20 // 8 = 2 sub-batches of 10; two iterations, two permutations
    (12, 4, 16, 1, 2),  # a batch smaller than w_size: one sub-batch, the whole batch
    (23, 2, 5, 3, 9),   # 4 sub-batches of 6, 6, 6, 5
])
def test_loss_matches_reference(n, d, w_size, w_iter, step):
    z_a, z_b = correlated(n, d, seed=n), correlated(n, d, seed=n + 1)
    got = wmse_loss(z_a, z_b, step=step, w_size=w_size, w_iter=w_iter).item()
    assert got == pytest.approx(ref_wmse([z_a, z_b], step, w_size, w_iter), rel=1e-10)


def test_three_views_every_pair_and_shrinkage():
    z = [correlated(12, 3, seed=s) for s in (1, 2, 3)]
    assert wmse_loss(*z, step=4, w_size=6).item() == pytest.approx(ref_wmse(z, 4, 6), rel=1e-10)
    assert wmse_loss(*z, step=4, w_size=6, w_eps=0.2).item() == pytest.approx(ref_wmse(z, 4, 6, 1, 0.2), rel=1e-10)


def test_sub_batches_are_the_step_seeded_permutation_cut_evenly():
    for n, w_size, step in [(16, 8, 0), (23, 5, 3), (7, 16, 1)]:
        parts = sub_batches(n, w_size, torch.Generator().manual_seed(step))
        assert [p.tolist() for p in parts] == ref_parts(n, w_size, step)
        assert sorted(torch.cat(parts).tolist()) == list(range(n))


def test_identical_views_give_zero():
    z = correlated(16, 3)
    assert wmse_loss(z, z.clone(), step=1, w_size=8).item() == pytest.approx(0.0, abs=1e-12)


def test_invariant_to_a_per_dimension_affine_map_of_the_embeddings():
    z_a, z_b = correlated(16, 3, seed=1), correlated(16, 3, seed=2)
    scale, shift = torch.tensor([0.1, 5.0, 2.0], dtype=torch.float64), torch.tensor([1.0, -4.0, 0.5])
    same = wmse_loss(z_a * scale + shift, z_b * scale - shift, step=3, w_size=8).item()
    assert same == pytest.approx(wmse_loss(z_a, z_b, step=3, w_size=8).item(), rel=1e-10)


def test_the_step_picks_the_sub_batches():
    z_a, z_b = correlated(24, 2, seed=1), correlated(24, 2, seed=2)
    at = {s: wmse_loss(z_a, z_b, step=s, w_size=8).item() for s in (0, 1)}
    assert wmse_loss(z_a, z_b, step=0, w_size=8).item() == at[0]  # every process draws the same
    assert at[0] != pytest.approx(at[1], rel=1e-6)
    # one sub-batch: the permutation no longer matters, nor does the order of the samples
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(7))
    one = wmse_loss(z_a, z_b, step=0, w_size=32).item()
    assert wmse_loss(z_a[perm], z_b[perm], step=1, w_size=32).item() == pytest.approx(one, rel=1e-10)


@pytest.mark.parametrize("n,w_size", [(4, 16), (6, 16), (12, 5)])
def test_too_few_samples_per_sub_batch_is_a_one_line_error(n, w_size):
    with pytest.raises(UserError) as e:
        wmse_loss(rand(n, 6), rand(n, 6, seed=1), w_size=w_size)
    msg = str(e.value)
    assert "\n" not in msg and "data.batch_size" in msg and f"objective.w_size={w_size}" in msg
    assert f"of {n} with" in msg and "above 6" in msg
    assert torch.isfinite(wmse_loss(rand(n, 6), rand(n, 6, seed=1), w_size=w_size, w_eps=0.1))


def test_gradients_reach_both_inputs():
    z_a, z_b = correlated(16, 3, seed=1).requires_grad_(), correlated(16, 3, seed=2).requires_grad_()
    wmse_loss(z_a, z_b, step=0, w_size=8).backward()
    for z in (z_a, z_b):
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


# ---- the module ------------------------------------------------------------------------------------------------
def tiny_setup(**kw):
    torch.manual_seed(0)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    return d, enc, WMSE(enc, d, **({"projector": (32, 4), "w_size": 8} | kw))


def tiny_batch(n=16, local=False, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(n, 1, 8, 8, generator=g, dtype=dtype) for _ in range(2)]
    if local:
        views.append(torch.randn(n, 1, 4, 4, generator=g, dtype=dtype))
    return {"views": views, "y": torch.zeros(n, dtype=torch.long)}


@pytest.mark.parametrize("local", [False, True])
def test_module_matches_reference_on_projections(local):
    _, enc, obj = tiny_setup(w_iter=2)
    enc.double(), obj.double()
    z = []
    obj.projector.register_forward_hook(lambda m, i, o: z.append(o.detach().clone()))
    loss, logs = obj(enc, tiny_batch(local=local, dtype=torch.float64), {"step": 11})
    assert len(z) == (3 if local else 2)
    ref = ref_wmse(z, 11, 8, 2)
    assert loss.item() == pytest.approx(ref, rel=1e-9)
    assert logs["cos"].item() == pytest.approx(1 - ref / 2, rel=1e-9)


def test_module_smoke_gradients_reach_encoder_and_heads():
    _, enc, obj = tiny_setup()
    loss, logs = obj(enc, tiny_batch(), {"step": 0})
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs["rep"].shape == (16, 16) and not logs["rep"].requires_grad
    assert set(logs) == {"rep", "cos", "raw_cos"} and -1 <= logs["raw_cos"].item() <= 1
    loss.backward()
    for name, p in [*enc.named_parameters(), *obj.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    last = obj.projector[-1]
    assert isinstance(last, nn.Linear) and last.bias is None  # whitening centres: a bias would get no gradient
    assert obj.batch_statistics and obj.collapse_hint


def test_module_step_changes_the_sub_batches():
    _, enc, obj = tiny_setup()
    batch = tiny_batch()
    with torch.no_grad():
        a, b = (obj(enc, batch, {"step": s})[0].item() for s in (0, 1))
    assert a != pytest.approx(b, rel=1e-6)


def test_module_refuses_a_sub_batch_no_wider_than_the_embedding():
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    with pytest.raises(UserError, match="objective.w_size=4 must exceed the embedding width 4") as e:
        WMSE(Encoder(d, dim=16, depth=1, heads=2), d, projector=(32, 4), w_size=4)
    assert "\n" not in str(e.value)
