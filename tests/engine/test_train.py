"""The training loop: step-0 baseline export, determinism, relaunch = exact resume, bad data path."""
import math

import pytest
import torch

import multissl
from multissl.cli import options
from multissl.errors import UserError
from multissl.train import main, run

DOMAINS = options("domain")  # the registry: a new domain is covered without editing this file

# constant lr (no warmup, no decay) and no EMA schedule dependence: a run's step k is then the same
# whatever max_steps is, so a 2-step run resumed to 4 must match a straight 4-step run.
CONSTANT_SCHEDULE = ("optim.warmup_steps=0", "optim.min_lr_ratio=1.0", "objective=simclr")


def losses(rows):
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_zero_steps_exports_baseline(tiny):
    folder = tiny.run("trainer.max_steps=0")
    rows = tiny.metrics(folder)
    assert len(rows) == 1
    assert rows[0]["step"] == 0 and "loss" not in rows[0]
    assert 0.0 <= rows[0]["knn_acc"] <= 1.0 and math.isfinite(rows[0]["rankme"])
    assert (folder / "encoder" / "model.safetensors").is_file()
    enc = multissl.load_encoder(folder)
    assert enc.embed(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)).shape == (2, 16)


@pytest.mark.parametrize("domain", DOMAINS)
def test_same_seed_same_losses(tiny, domain):
    a = tiny.metrics(tiny.run(f"domain={domain}", "trainer.max_steps=3", "trainer.seed=3", name="a"))
    b = tiny.metrics(tiny.run(f"domain={domain}", "trainer.max_steps=3", "trainer.seed=3", name="b"))
    la, lb = losses(a), losses(b)
    assert sorted(la) == [1, 2, 3]
    assert la == lb  # bit-identical
    assert len(set(la.values())) > 1  # the loss actually moves, so equality is not trivial
    drop = ("samples_per_s",)  # wall-clock
    assert {k: v for k, v in a[-1].items() if k not in drop} == {k: v for k, v in b[-1].items() if k not in drop}
    assert "knn_acc" in a[-1] or "state_r2_mean" in a[-1]  # the held-out metrics are among what is compared


@pytest.mark.parametrize("domain", DOMAINS)
def test_relaunch_resumes_where_it_stopped(tiny, capsys, domain):
    sched = (*CONSTANT_SCHEDULE, f"domain={domain}")
    straight = losses(tiny.metrics(tiny.run(*sched, "trainer.max_steps=4", name="straight")))

    folder = tiny.run(*sched, "trainer.max_steps=2", name="split")
    n_before = len(tiny.metrics(folder))
    capsys.readouterr()
    assert tiny.run(*sched, "trainer.max_steps=4", name="split") == folder
    err = capsys.readouterr().err
    assert "resuming" in err and "step 2" in err

    new_rows = tiny.metrics(folder)[n_before:]
    assert new_rows[0]["step"] == 3
    assert [r["step"] for r in new_rows if "loss" in r] == [3, 4]
    assert (folder / "checkpoints" / "step_00000004.pt").is_file()
    # exact resume: model, optimizer, probe and RNG state restored, data indexed by step
    resumed = losses(new_rows)
    assert resumed == pytest.approx({3: straight[3], 4: straight[4]}, rel=1e-6, abs=1e-7)


def test_missing_data_path_is_a_user_error(tiny, tmp_path):
    missing = tmp_path / "nonexistent"
    with pytest.raises(UserError, match=str(missing)):
        run(tiny.config(f"data.path={missing}", "trainer.max_steps=1"))
    with pytest.raises(UserError, match="/nonexistent"):
        run(tiny.config("data.path=/nonexistent", "trainer.max_steps=1"))


def test_bf16_precision_runs(tiny):
    rows = [r for r in tiny.metrics(tiny.run("trainer.max_steps=2", "trainer.precision=bf16")) if "loss" in r]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)


@pytest.mark.parametrize("bad", ["trainer.precision=fp32", "optim.name=sgd", "optim.scale_rule=cubic"])
def test_bad_choice_is_one_line_error(bad, capsys):
    with pytest.raises(SystemExit) as e:  # in process: an exception other than SystemExit would fail here
        main([bad])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and bad.split("=")[0] in err


def test_trainer_resume_names_the_run_to_continue(tiny):
    folder = tiny.run(*CONSTANT_SCHEDULE, "trainer.max_steps=2", name="first")
    # no run.dir: trainer.resume=<dir> alone picks the run folder and its latest checkpoint
    cfg = tiny.config(*CONSTANT_SCHEDULE, "trainer.max_steps=3", f"trainer.resume={folder}")
    cfg.run.dir = None
    assert run(cfg) == folder
    assert [r["step"] for r in tiny.metrics(folder) if "loss" in r] == [1, 2, 3]


def test_tensorboard_events_mirror_metrics(tiny):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    folder = tiny.run("trainer.max_steps=2")
    acc = EventAccumulator(str(folder / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [1, 2]
    assert [e.value for e in acc.Scalars("loss")] == pytest.approx([r["loss"] for r in tiny.metrics(folder)
                                                                     if "loss" in r])
    assert "knn_acc" in acc.Tags()["scalars"]


def test_predictor_runs_at_its_lr_multiple(tiny):
    # BYOL's predictor_lr: the engine applies each group's lr_scale to the scheduled lr at every step
    folder = tiny.run(*CONSTANT_SCHEDULE, "objective=byol", "objective.predictor_lr=7", "trainer.max_steps=2")
    groups = torch.load(sorted((folder / "checkpoints").glob("*.pt"))[-1], weights_only=True)["optimizer"]["param_groups"]
    lrs = {g["lr_scale"]: g["lr"] for g in groups}
    assert set(lrs) == {1.0, 7.0}
    assert lrs[7.0] == pytest.approx(7 * lrs[1.0]) and lrs[1.0] > 0
