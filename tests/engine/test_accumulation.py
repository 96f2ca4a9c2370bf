"""Gradient accumulation: data.batch_size stays the effective batch, cut into trainer.accumulate
micro-batches; a batch-statistic loss sees one micro-batch at a time (and the engine warns)."""
import pytest
import torch
from accelerate.utils import set_seed

from multissl.data import StepSampler, make_views, steps, train_loader
from multissl.errors import UserError
from multissl.train import build


def losses(rows):
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_micro_batches_cover_the_step_draws_for_any_process_count():
    assert list(StepSampler(1, 2, 8, 0, 1, accumulate=2)) == [[8, 9, 10, 11], [12, 13, 14, 15]]
    assert list(StepSampler(1, 2, 8, 0, 2, accumulate=2)) == [[8, 9], [12, 13]]
    assert list(StepSampler(1, 2, 8, 1, 2, accumulate=2)) == [[10, 11], [14, 15]]
    assert len(StepSampler(0, 3, 8, 0, 1, accumulate=4)) == 12
    assert list(steps(iter(range(6)), 3)) == [[0, 1, 2], [3, 4, 5]]


def test_per_sample_loss_is_unchanged_by_accumulation(tiny, capsys):
    """MAE's loss is a mean over samples: 2 micro-batches of 16 give the loss and the update of one
    batch of 32 (the step-2 loss checks that the gradients matched too)."""
    common = ("objective=mae", "trainer.max_steps=2")
    one = losses(tiny.metrics(tiny.run(*common, name="one")))
    capsys.readouterr()
    two = losses(tiny.metrics(tiny.run(*common, "trainer.accumulate=2", name="two")))
    assert "warning" not in capsys.readouterr().err  # no batch statistics, nothing to warn about
    assert sorted(one) == [1, 2]
    assert two == pytest.approx(one, rel=1e-5)


def test_batch_statistic_loss_is_the_mean_over_micro_batches(tiny, capsys):
    """SimCLR with accumulate=2: its negatives come from one micro-batch, so the step loss is the mean
    of the loss of each half of the batch computed alone — not the full-batch loss."""
    cfg = tiny.config("objective=simclr", "trainer.max_steps=1", "trainer.accumulate=2", name="acc")
    set_seed(cfg.trainer.seed)  # as run() does, so the reference model starts from the same weights
    domain, train_set, _, encoder, objective = build(cfg)
    from multissl.train import SSLModel
    model = SSLModel(encoder, objective).train()
    full = make_views(domain, next(iter(train_loader(train_set, domain, cfg.trainer.seed, 2, 32, 0, 1, 0, 1))))
    sched = {"ema": 0.9, "lr": 0.0, "wd": 0.0, "step": 0, "total_steps": 1, "progress": 0.0}
    with torch.no_grad():
        whole = model(full, sched)[0].item()
        halves = [model({"views": [v[sl] for v in full["views"]], "y": full["y"][sl], "keep": full["keep"][sl],
                         "masked": full["masked"][sl]}, sched)[0].item() for sl in (slice(0, 16), slice(16, 32))]

    from multissl.train import run
    capsys.readouterr()
    got = losses(tiny.metrics(run(cfg)))[1]
    err = capsys.readouterr().err
    assert "trainer.accumulate=2" in err and "micro-batch of 16" in err and "warning" in err
    assert got == pytest.approx(sum(halves) / 2, rel=1e-5)
    assert abs(got - whole) > 1e-3  # per-micro-batch statistics really differ from the full batch's


@pytest.mark.parametrize("overrides, match", [
    (("objective=simclr", "data.batch_size=1"), "at least 2 samples per micro-batch"),
    (("objective=vicreg", "data.batch_size=4", "trainer.accumulate=4"), "at least 2 samples per micro-batch"),
    (("objective=byol", "data.batch_size=6", "trainer.accumulate=4"), "not divisible"),
    (("objective=mae", "trainer.accumulate=0"), "at least 1"),
])
def test_bad_batch_settings_are_one_line_errors(tiny, overrides, match):
    with pytest.raises(UserError, match=match) as e:
        tiny.run(*overrides, "trainer.max_steps=1")
    assert "\n" not in str(e.value)
    assert not (tiny.root / "run" / "checkpoints").exists()  # refused before anything is written


def test_per_sample_loss_trains_with_batch_of_one(tiny):
    rows = tiny.metrics(tiny.run("objective=mae", "data.batch_size=2", "trainer.accumulate=2",
                                 "trainer.max_steps=2"))
    assert sorted(losses(rows)) == [1, 2]
