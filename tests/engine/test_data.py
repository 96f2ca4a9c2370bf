"""The step-indexed data pipeline (multissl/data.py): draws that depend only on (seed, position), epochs that are
permutations, the step sampler's positions, and a global batch that does not depend on the process count."""
import pytest
import torch

from multissl.data import Collate, StepSampler, Views, make_views, train_loader
from multissl.domains.image import ImageDomain

from tiny import item_views


@pytest.fixture(scope="module")
def digits():
    d = ImageDomain()
    d.dataset("train")
    return d


def _same_item(a, b, d):
    return (all(torch.equal(p, q) for p, q in zip(item_views(d, a), item_views(d, b))) and a["y"] == b["y"]
            and torch.equal(a["keep"], b["keep"]) and torch.equal(a["masked"], b["masked"]))


def test_views_dataset_is_deterministic_across_instances(digits):
    base = digits.dataset("train")
    a, b = Views(base, digits, 3, 2), Views(base, digits, 3, 2)
    ks = [0, 5, len(base) - 1, len(base), 2 * len(base) + 7]  # crosses epoch boundaries
    for k in ks:  # b visited in another order than a: no hidden state
        assert _same_item(a[k], b[k], digits)
    for k in reversed(ks):
        assert _same_item(a[k], b[k], digits)
    assert not _same_item(a[0], Views(base, digits, 4, 2)[0], digits)  # the seed matters


def test_views_dataset_epochs_are_permutations(digits):
    base = digits.dataset("train")
    v = Views(base, digits, 0, 2)
    n = len(base)
    e0 = [v.sample_index(k) for k in range(n)]
    e1 = [v.sample_index(k) for k in range(n, 2 * n)]
    assert sorted(e0) == list(range(n)) and sorted(e1) == list(range(n))
    assert e0 != e1


def test_step_sampler_draw_positions():
    assert list(StepSampler(2, 4, 4, 0, 1)) == [[8, 9, 10, 11], [12, 13, 14, 15]]
    assert list(StepSampler(2, 4, 4, 0, 2)) == [[8, 9], [12, 13]]
    assert list(StepSampler(2, 4, 4, 1, 2)) == [[10, 11], [14, 15]]
    assert len(StepSampler(3, 3, 4, 0, 1)) == 0


def test_global_batch_is_process_count_invariant(digits):
    base, seed, step, b = digits.dataset("train"), 11, 5, 6
    one = make_views(digits, next(iter(train_loader(base, digits, seed, 2, b, step, step + 1, rank=0, world=1))))
    parts = [make_views(digits, next(iter(train_loader(base, digits, seed, 2, b, step, step + 1, rank=r, world=2))))
             for r in (0, 1)]
    assert one["views"][0].shape == (b, 1, 8, 8) and len(one["views"]) == 2
    for i in range(2):
        assert torch.equal(torch.cat([p["views"][i] for p in parts]), one["views"][i])
    for key in ("y", "keep", "masked"):
        assert torch.equal(torch.cat([p[key] for p in parts]), one[key])
    # and the batch is exactly the collated draws at positions step*b .. step*b + b - 1
    ref = make_views(digits, Collate(digits)([Views(base, digits, seed, 2)[k] for k in range(step * b, step * b + b)]))
    assert torch.equal(ref["views"][1], one["views"][1]) and torch.equal(ref["y"], one["y"])
