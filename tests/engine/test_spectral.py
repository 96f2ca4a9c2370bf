import math

import numpy as np
import pytest
import torch

from multissl.spectral import (centred_unit_dimensions, diagnostics, duality_losses, effective_rank, rank_difference,
                               singular_values, unit_embeddings)

SHAPES = [(7, 3), (5, 11), (64, 16), (16, 64), (30, 30)]  # (n samples, m dimensions)


def reference_losses(z: np.ndarray) -> tuple[float, float]:
    """The paper's definitions with K = Z^T [m n]: off-diagonal Gram and off-diagonal covariance, formed whole."""
    k = z.T
    gram, cov = k.T @ k, k @ k.T  # [n n], [m m]
    off = lambda a: a - np.diag(np.diag(a))  # noqa: E731
    return float((off(gram) ** 2).sum()), float((off(cov) ** 2).sum())


@pytest.mark.parametrize("n,m", SHAPES)
def test_duality_losses_are_the_papers_definitions_and_satisfy_theorem_3_3(n, m):
    z = torch.randn(n, m, dtype=torch.float64, generator=torch.Generator().manual_seed(n * m))
    l_c, l_nc = duality_losses(z)
    ref_c, ref_nc = reference_losses(z.numpy())
    assert l_c == pytest.approx(ref_c, rel=1e-9) and l_nc == pytest.approx(ref_nc, rel=1e-9)
    k = z.numpy().T
    rows4 = (np.linalg.norm(k, axis=1) ** 4).sum()  # sum_j ||K_j,.||^4 (dimensions)
    cols4 = (np.linalg.norm(k, axis=0) ** 4).sum()  # sum_i ||K_.,i||^4 (samples)
    assert ref_nc + rows4 == pytest.approx(ref_c + cols4, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("n,m", SHAPES)
def test_unit_embeddings_obey_corollary_3_4_1(n, m):
    z = unit_embeddings(torch.randn(n, m, dtype=torch.float64, generator=torch.Generator().manual_seed(n + m)))
    l_c, l_nc = duality_losses(z)
    assert l_nc - n + n * n / m <= l_c + 1e-9
    assert l_c <= l_nc - n + n * n + 1e-9
    # the bound is tight where the embeddings' dimensions are orthogonal with equal norms (whitened)
    eye = unit_embeddings(torch.eye(m, dtype=torch.float64))  # n = m, Gram = identity
    l_c, l_nc = duality_losses(eye)
    assert l_c == pytest.approx(l_nc - m + m * m / m, abs=1e-9)


def test_centred_unit_dimensions_have_zero_mean_and_unit_norm_and_keep_a_constant_dimension_zero():
    z = torch.randn(50, 6, dtype=torch.float64) * torch.arange(1, 7) + 3.0
    z[:, 2] = 5.0
    out = centred_unit_dimensions(z)
    torch.testing.assert_close(out.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)
    norms = out.norm(dim=0)
    torch.testing.assert_close(norms[[0, 1, 3, 4, 5]], torch.ones(5, dtype=torch.float64))
    assert norms[2] == 0


def test_effective_rank_against_a_hand_computation():
    z = torch.diag(torch.tensor([3.0, 1.0]))  # singular values 3, 1: p = (3/4, 1/4)
    hand = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(z) == pytest.approx(hand, rel=1e-12)
    assert effective_rank(torch.eye(5)) == pytest.approx(5.0, rel=1e-12)
    assert effective_rank(torch.ones(8, 4)) == pytest.approx(1.0, rel=1e-9)  # rank one
    assert effective_rank(torch.zeros(8, 4)) == 0.0
    x = torch.randn(40, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    s = np.linalg.svd(x.numpy(), compute_uv=False)
    p = s / s.sum()
    assert effective_rank(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)
    # fewer samples than dimensions: the spectrum has n values, the others are zero, not rounding noise
    wide = torch.randn(3, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    np.testing.assert_allclose(singular_values(wide).numpy(), np.linalg.svd(wide.numpy(), compute_uv=False),
                               rtol=1e-9)


def test_rank_difference_is_target_minus_online():
    online, target = torch.ones(20, 4), torch.eye(4).repeat(5, 1)
    out = rank_difference(online, target)
    assert out["rdm/erank_online"] == pytest.approx(1.0) and out["rdm/erank_target"] == pytest.approx(4.0)
    assert out["rdm/diff"] == pytest.approx(3.0)


def test_diagnostics_read_the_projector_output_when_there_is_one():
    g = torch.Generator().manual_seed(0)
    rep, proj = torch.randn(30, 8, generator=g), torch.randn(30, 5, generator=g)
    both, rep_only = diagnostics(rep, proj), diagnostics(rep)
    assert both["erank"] == rep_only["erank"] == pytest.approx(effective_rank(rep))
    assert both["erank_proj"] == pytest.approx(effective_rank(proj)) and "erank_proj" not in rep_only
    assert both["duality/l_c"] == pytest.approx(duality_losses(unit_embeddings(proj))[0])
    assert rep_only["duality/l_nc_dims"] == pytest.approx(duality_losses(centred_unit_dimensions(rep))[1])
