"""Tabular views: SCARF corruption, SubTab subsets, gaussian noise, and how the domain composes them."""
import math

import torch

from multissl.domains.tabular import TabularDomain
from multissl.domains.tabular.views import hide_subset, numeric_noise, scarf_corrupt


def test_scarf_corrupts_exactly_the_count_with_values_from_that_column(cancer, far_row):
    train = cancer.dataset("train").x
    x = far_row(cancer)
    for seed in range(5):
        view = cancer.views(x, torch.Generator().manual_seed(seed), 2)[0]
        changed = (view != x).nonzero()[:, 0]
        assert len(changed) == round(0.6 * 30)
        rows = set()
        for j in changed.tolist():
            hit = (train[:, j] == view[j]).nonzero()[:, 0]
            assert len(hit) > 0  # the value is one of column j's training values
            rows |= set(hit.tolist())
        assert len(rows) > 1  # drawn per column (the marginal), not a whole row copied


def test_scarf_reference_on_a_table_of_distinct_values():
    train = torch.arange(50 * 8, dtype=torch.float32).view(50, 8) * 10 + 0.5  # value -> (row, column)
    x = torch.full((8,), -1.0)
    view = scarf_corrupt(x, train, 0.5, torch.Generator().manual_seed(0))
    changed = (view != x).nonzero()[:, 0].tolist()
    assert len(changed) == 4
    for j in changed:
        row, col = divmod(int((view[j] - 0.5) / 10), 8)
        assert col == j and 0 <= row < 50


def test_marginal_draws_follow_the_column_distribution(cancer, far_row):
    train = cancer.dataset("train").x
    x = far_row(cancer)
    draws = torch.stack([scarf_corrupt(x, train, 1.0, torch.Generator().manual_seed(s)) for s in range(400)])
    torch.testing.assert_close(draws.mean(0), train.mean(0), atol=0.15, rtol=0)  # standardized: mean ~0, std ~1


def test_subset_hides_exactly_the_count_as_missing(tmp_path, csv, domain, kinds, mixed_table):
    d = domain(csv(tmp_path, mixed_table()), data={"target": "label"})
    x = d.dataset("train").x[1]  # row 1: no missing cell
    assert not x.isnan().any() and (x[[2, 3, 4]] != 1).all()
    out = hide_subset(x, d.missing_values, 0.6, torch.Generator().manual_seed(0))
    hidden = [j for j in range(5) if not (out[j] == x[j])]
    assert len(hidden) == 3
    for j in hidden:
        assert math.isnan(out[j]) if kinds(d)[d.features[j]["name"]] == "numeric" else out[j] == 1.0


def test_noise_touches_present_numeric_features_only():
    x = torch.tensor([1.0, float("nan"), 3.0, 2.0])
    numeric = torch.tensor([True, True, True, False])
    out = numeric_noise(x, numeric, 0.5, torch.Generator().manual_seed(0))
    want = x + 0.5 * torch.randn(4, generator=torch.Generator().manual_seed(0))
    assert out[0] == want[0] and out[2] == want[2]
    assert math.isnan(out[1]) and out[3] == 2.0


def test_views_are_a_function_of_the_generator_and_compose(cancer):
    x = cancer.dataset("train").x[0]
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    d = TabularDomain(subset_rate=0.2, noise_std=0.1)
    d.dataset("train")
    a = d.views(x, torch.Generator().manual_seed(1), 2)
    assert torch.rand(1) == before  # the global RNG is untouched
    b = d.views(x, torch.Generator().manual_seed(1), 2)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, equal_nan=True, atol=0, rtol=0)
    assert not torch.equal(a[0].nan_to_num(), a[1].nan_to_num())
    assert all(v.isnan().sum() == 6 for v in a)  # the subset (0.2 x 30) on a row without missing values
    assert torch.equal(d.views(x, torch.Generator().manual_seed(1), 1)[0], x)  # one view: the row itself
