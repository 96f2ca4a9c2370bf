"""Tabular views: SCARF corruption, SubTab subsets, gaussian noise, and how the domain composes them."""
import math

import torch

from multissl.data import stack_draws
from multissl.domains.tabular import TabularDomain
from multissl.domains.tabular.views import apply_views, draw_view


def one_view(x, train, rng, scarf=0.0, subset=0.0, missing=None, numeric=None, std=0.0):
    """One view of row x [F] through the per-sample draw and the batched apply."""
    f = len(x)
    p = {k: t[None, None] for k, t in draw_view(f, len(train), scarf, subset, std > 0, rng).items()}
    missing = torch.full((f,), float("nan")) if missing is None else missing
    numeric = torch.ones(f, dtype=torch.bool) if numeric is None else numeric
    return apply_views(x[None], train, missing, numeric, **p, std=std)[0, 0]


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
    view = one_view(x, train, torch.Generator().manual_seed(0), scarf=0.5)
    changed = (view != x).nonzero()[:, 0].tolist()
    assert len(changed) == 4
    for j in changed:
        row, col = divmod(int((view[j] - 0.5) / 10), 8)
        assert col == j and 0 <= row < 50


def test_marginal_draws_follow_the_column_distribution(cancer, far_row):
    train = cancer.dataset("train").x
    x = far_row(cancer)
    draws = torch.stack([one_view(x, train, torch.Generator().manual_seed(s), scarf=1.0) for s in range(400)])
    torch.testing.assert_close(draws.mean(0), train.mean(0), atol=0.15, rtol=0)  # standardized: mean ~0, std ~1


def test_subset_hides_exactly_the_count_as_missing(tmp_path, csv, domain, kinds, mixed_table):
    d = domain(csv(tmp_path, mixed_table()), data={"target": "label"})
    x = d.dataset("train").x[1]  # row 1: no missing cell
    assert not x.isnan().any() and (x[[2, 3, 4]] != 1).all()
    out = one_view(x, d.dataset("train").x, torch.Generator().manual_seed(0), subset=0.6, missing=d.missing_values)
    hidden = [j for j in range(5) if not (out[j] == x[j])]
    assert len(hidden) == 3
    for j in hidden:
        assert math.isnan(out[j]) if kinds(d)[d.features[j]["name"]] == "numeric" else out[j] == 1.0


def test_noise_touches_present_numeric_features_only():
    x = torch.tensor([1.0, float("nan"), 3.0, 2.0])
    numeric = torch.tensor([True, True, True, False])
    g = torch.Generator().manual_seed(0)
    out = one_view(x, torch.zeros(3, 4), g, numeric=numeric, std=0.5)
    g = torch.Generator().manual_seed(0)
    want = x + 0.5 * torch.randn(4, generator=g)
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


def test_batched_apply_equals_each_sample_applied_alone(cancer):
    d = TabularDomain(subset_rate=0.2, noise_std=0.1)
    train = d.dataset("train")
    items = [d.draw(train.x[i], torch.Generator().manual_seed(i), 2) for i in range(6)]
    drawn = stack_draws(items)
    views = d.apply(drawn)
    for i in range(6):
        for v, alone in zip(views, d.apply({k: t[i:i + 1] for k, t in drawn.items()})):
            torch.testing.assert_close(v[i], alone[0], equal_nan=True, atol=0, rtol=0)
