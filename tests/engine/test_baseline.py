"""The untrained encoder scored at the end of a run, next to the trained one, and the line that says whether
pretraining helped."""
import math
from types import SimpleNamespace

import pytest

from multissl.baseline import verdict


def last(rows: list[dict]) -> dict:
    return rows[-1]


@pytest.mark.parametrize("domain, key", [("image", "knn_acc"), ("tabular", "probe_linear"), ("rl", "state_r2_mean")])
def test_untrained_metrics_are_the_same_seeds_initial_encoder(tiny, capsys, domain, key):
    on = ("trainer.baseline=true", f"domain={domain}")
    zero = last(tiny.metrics(tiny.run(*on, "trainer.max_steps=0", name="zero")))
    trained = last(tiny.metrics(tiny.run(*on, "trainer.max_steps=3", name="trained")))
    # the untrained scores of a 3-step run are those of a run that never stepped, on the same seed
    assert trained[f"untrained/{key}"] == pytest.approx(zero[key], abs=1e-9)
    assert trained["untrained/rankme"] == pytest.approx(zero["rankme"], rel=1e-6)
    assert trained["rankme"] != pytest.approx(zero["rankme"], rel=1e-6)  # the trained encoder did move
    err = capsys.readouterr().err
    assert f"on this data: {key} {trained[key]:.4f}, untrained encoder {zero[key]:.4f}" in err


def test_a_resumed_run_scores_the_same_untrained_encoder(tiny):
    on = ("trainer.baseline=true", "domain=tabular")
    straight = last(tiny.metrics(tiny.run(*on, "trainer.max_steps=4", name="straight")))
    tiny.run(*on, "trainer.max_steps=2", name="split")
    resumed = last(tiny.metrics(tiny.run(*on, "trainer.max_steps=4", name="split")))
    assert {k: v for k, v in resumed.items() if k.startswith("untrained/")} == pytest.approx(
        {k: v for k, v in straight.items() if k.startswith("untrained/")}, abs=1e-9)


def test_off_logs_no_untrained_metrics(tiny, capsys):
    rows = tiny.metrics(tiny.run("trainer.max_steps=1"))  # tiny runs set trainer.baseline=false
    assert not any(k.startswith("untrained/") for r in rows for k in r)
    assert "on this data" not in capsys.readouterr().err


def domain(headline=None):
    return SimpleNamespace(headline=headline)


def band(p: float, n: int) -> float:
    return 2 * math.sqrt(2 * p * (1 - p) / n)  # two standard errors of a difference of two proportions


def test_a_proportion_gap_beyond_two_standard_errors_helped():
    n = 400
    line = verdict({"knn_acc": 0.90, "untrained/knn_acc": 0.80}, domain(), n)
    assert line.startswith("pretraining helped on this data: knn_acc 0.9000, untrained encoder 0.8000 (+0.1000")
    assert f"±{band(0.85, n):.4f}" in line and f"on {n} held-out samples" in line
    assert verdict({"knn_acc": 0.70, "untrained/knn_acc": 0.80}, domain(), n).startswith("pretraining did not help")


def test_a_proportion_gap_within_two_standard_errors_is_no_clear_difference():
    # 114 held-out rows (the default table): 2 rows of 114 is noise
    line = verdict({"probe_linear": 0.965, "untrained/probe_linear": 0.947},
                   domain(("probe_linear", True, True)), 114)
    assert 0.018 < band(0.956, 114) and line.startswith("no clear difference from pretraining")


def test_lower_is_better_and_non_proportions_are_judged_on_their_sign():
    rmse = domain(("probe_linear", False, False))
    assert verdict({"probe_linear": 3.0, "untrained/probe_linear": 4.0}, rmse, 100).startswith("pretraining helped")
    assert verdict({"probe_linear": 4.0, "untrained/probe_linear": 3.0}, rmse, 100).startswith(
        "pretraining did not help")
    r2 = domain(("state_r2_mean", True, False))
    line = verdict({"state_r2_mean": 0.878, "untrained/state_r2_mean": 0.856}, r2, 2000)
    assert line.startswith("pretraining helped") and "compare seeds" in line and "±" not in line


def test_no_line_without_the_headline_metric():
    assert verdict({"rankme": 3.0, "untrained/rankme": 2.0}, domain(), 100) is None
    assert verdict({"knn_acc": 0.9}, domain(), 100) is None
