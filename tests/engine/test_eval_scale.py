"""Evaluation whose cost does not grow with the data: the bounded default of trainer.eval_samples, the counts each
evaluation logs, and the kNN scored in blocks of held-out rows (against the full similarity matrix)."""
import pytest
import torch
import torch.nn.functional as F

from multissl import monitor
from multissl.baseline import heldout_count
from multissl.errors import UserError
from multissl.monitor import (EVAL_TEST_CAP, EVAL_TRAIN_CAP, cap_note, downstream_cap, eval_caps, eval_sets,
                              knn_accuracy, knn_classes)


def spread_ok(indices: list[int], n: int, cap: int) -> bool:
    """`cap` increasing indices from the first sample to the last, neighbours (n - 1) / (cap - 1) apart, rounded."""
    gaps = {b - a for a, b in zip(indices, indices[1:])}
    step = (n - 1) / (cap - 1)
    return len(indices) == cap and indices[0] == 0 and indices[-1] == n - 1 and gaps <= {int(step), int(step) + 1}


def test_null_caps_each_split_evenly():
    train, test = range(3 * EVAL_TRAIN_CAP + 7), range(2 * EVAL_TEST_CAP + 1)
    tr, te = eval_sets(train, test, None)
    assert spread_ok(tr.indices, len(train), EVAL_TRAIN_CAP) and spread_ok(te.indices, len(test), EVAL_TEST_CAP)
    assert tr.indices == monitor.subset(train, EVAL_TRAIN_CAP).indices  # the one spreading rule


def test_a_split_under_its_cap_is_used_whole():
    train, test = range(EVAL_TEST_CAP + 1), range(40)  # the training split is over the held-out cap, not its own
    tr, te = eval_sets(train, test, None)
    assert tr is train and te is test and eval_sets(train, None, None)[1] is None
    assert cap_note(train, test, None) is None


def test_a_count_caps_both_splits_and_one_above_them_keeps_every_sample():
    train, test = range(EVAL_TRAIN_CAP + 5), range(EVAL_TEST_CAP + 5)
    tr, te = eval_sets(train, test, 100)
    assert spread_ok(tr.indices, len(train), 100) and spread_ok(te.indices, len(test), 100)
    assert all(a is b for a, b in zip(eval_sets(train, test, 10 ** 8), (train, test)))
    assert (eval_caps(None), eval_caps(64)) == ((EVAL_TRAIN_CAP, EVAL_TEST_CAP), (64, 64))
    assert (downstream_cap(None), downstream_cap(64)) == (EVAL_TRAIN_CAP, 64)


@pytest.mark.parametrize("bad", [0, -3, "all", True, 2.5])
def test_a_bad_eval_samples_is_one_line(bad):
    with pytest.raises(UserError) as e:
        eval_sets(range(10), range(10), bad)
    msg = str(e.value)
    assert msg.startswith("trainer.eval_samples must be null or a count") and repr(bad) in msg and "\n" not in msg


def test_the_note_names_each_split_a_cap_cut():
    big_train, big_test = range(1_200_000), range(300_000)
    assert cap_note(big_train, range(40), None) == (
        f"evaluated on {EVAL_TRAIN_CAP:,} of 1,200,000 training samples (trainer.eval_samples)")
    assert cap_note(range(40), big_test, None) == (
        f"evaluated on {EVAL_TEST_CAP:,} of 300,000 held-out samples (trainer.eval_samples)")
    assert cap_note(big_train, big_test, 64) == (
        "evaluated on 64 of 1,200,000 training samples and 64 of 300,000 held-out samples (trainer.eval_samples)")


def test_the_verdicts_sample_count_follows_the_caps():
    assert heldout_count(range(EVAL_TEST_CAP + 10), None) == EVAL_TEST_CAP
    assert heldout_count(range(40), None) == 40 and heldout_count(range(40), 16) == 16
    assert heldout_count(None, None) is None


def full_matrix_knn(train_x, train_y, test_x, n_cls, k, temperature):
    """The kNN as one [q n] similarity matrix: cosine, the k most similar per row vote exp(sim / T)."""
    sim = F.normalize(test_x, dim=1) @ F.normalize(train_x, dim=1).T
    top, idx = sim.topk(min(k, len(train_x)), dim=1)
    votes = torch.zeros(len(test_x), n_cls).scatter_add_(1, train_y[idx], (top / temperature).exp())
    return votes.argmax(1)


def half_vectors(n: int, g) -> torch.Tensor:
    """[n 4] unit vectors of entries ±1/2: every dot product is exact, so equal ones are true ties, and with 16
    distinct rows the similarities take 5 values."""
    return (torch.randint(0, 2, (n, 4), generator=g) * 2 - 1).float() / 2


def kth_tie(train_x, test_x, k) -> bool:
    """Whether some held-out row has equal k-th and (k+1)-th similarities: a tie at the neighbourhood's edge."""
    s = (test_x @ train_x.T).sort(dim=1, descending=True).values
    return bool((s[:, k - 1] == s[:, k]).any())


@pytest.mark.parametrize("block", [1, 2, 7, 30, 31, 1000])  # the held-out split is 30 rows
@pytest.mark.parametrize("k", [1, 5, 200])  # 200: more than the training bank
@pytest.mark.parametrize("temperature", [0.07, 1.0, 10.0])
def test_blockwise_knn_is_the_full_matrix_knn(block, k, temperature):
    g = torch.Generator().manual_seed(k)
    ties = half_vectors(60, g), half_vectors(30, g)
    assert k >= 60 or kth_tie(*ties, k)  # the neighbourhood's edge cuts through equal similarities
    for train_x, test_x in [ties, (torch.randn(60, 6, generator=g), torch.randn(30, 6, generator=g))]:
        train_y, test_y = torch.randint(0, 5, (60,), generator=g), torch.randint(0, 5, (30,), generator=g)
        want = full_matrix_knn(train_x, train_y, test_x, 5, k, temperature)
        assert torch.equal(knn_classes(train_x, train_y, test_x, 5, k, temperature, block), want)
        acc = knn_accuracy(train_x, train_y, test_x, test_y, k, temperature, block)
        assert acc == (want == test_y).sum().item() / 30


@pytest.mark.parametrize("block", [1, 2, 5])
def test_temperature_weighting_decides_the_vote(block):
    # one neighbour of class 0 at similarity 1, two of class 1 at 0.5: a sharp vote picks 0, a flat one 1
    train_x = torch.tensor([[1.0, 0.0], [0.5, 0.75 ** 0.5], [0.5, -(0.75 ** 0.5)], [-1.0, 0.0]])
    train_y = torch.tensor([0, 1, 1, 2])
    test_x = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    for temperature, cls in [(0.07, 0), (10.0, 1)]:
        got = knn_classes(train_x, train_y, test_x, 3, 3, temperature, block)
        assert got.tolist() == [cls, cls] and torch.equal(got, full_matrix_knn(train_x, train_y, test_x, 3, 3,
                                                                                temperature))


def test_every_evaluation_logs_how_many_samples_it_used(tiny, capsys, monkeypatch):
    # the default caps, made small: digits' 1,438 training and 359 held-out samples are cut to them
    monkeypatch.setattr(monitor, "EVAL_TRAIN_CAP", 100)
    monkeypatch.setattr(monitor, "EVAL_TEST_CAP", 50)
    rows = tiny.metrics(tiny.run("trainer.max_steps=2", "trainer.eval_every=1", "trainer.eval_samples=null",
                                 "trainer.baseline=true"))
    evals = [r for r in rows if "loss" not in r]
    assert [r["step"] for r in evals] == [1, 2]
    for r in evals:
        assert (r["eval/train_samples"], r["eval/test_samples"]) == (100, 50)
        assert type(r["eval/train_samples"]) is int and type(r["eval/test_samples"]) is int
    assert not any(k.startswith("untrained/eval/") for k in evals[-1])  # the untrained encoder: the same samples
    assert "two standard errors on 50 held-out samples" in capsys.readouterr().err
