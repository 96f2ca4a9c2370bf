"""The objective lifecycle: after_step once per applied optimizer step (never on a skipped one, once under
accumulation), state in buffers that a skipped step leaves untouched, per-step values in `sched`, and every
scalar an objective logs in metrics.jsonl and TensorBoard under its name. Uses tests/toys.py's QueueContrast,
an objective with a queue filled in after_step."""
import math

import pytest
import torch
from omegaconf import open_dict

import toys
from multissl import checkpoint
from multissl.data import Views
from multissl.domains.image import ImageDomain
from multissl.train import run

QUEUE = {"_target_": "toys.QueueContrast", "size": 48, "dim": 16, "temperature": 0.2}


def queue_config(tiny, *overrides, name="run"):
    cfg = tiny.config("trainer.checkpoint_every=1", *overrides, name=name)
    with open_dict(cfg):
        cfg.objective = dict(QUEUE)
        cfg.meta.objective = "queue"
    return cfg


def buffers(folder, step):
    state = checkpoint.load(folder / "checkpoints" / f"step_{step:08d}.pt")["model"]
    names = {k for k in state if any(k.endswith(s) for s in ("queue", "queue_y", "ptr", "updates", "running_mean",
                                                             "running_var", "num_batches_tracked"))}
    return {k: state[k] for k in names}, state


def test_a_skipped_step_leaves_every_buffer_and_parameter_unchanged(tiny, monkeypatch):
    real = toys.QueueContrast.forward

    def nan_on_step_1(self, encoder, batch, sched):
        loss, logs = real(self, encoder, batch, sched)
        return (loss * float("nan") if sched["step"] == 1 else loss), logs
    monkeypatch.setattr(toys.QueueContrast, "forward", nan_on_step_1)
    folder = run(queue_config(tiny, "trainer.max_steps=2"))
    rows = [r for r in tiny.metrics(folder) if "loss" in r]
    assert math.isfinite(rows[0]["loss"]) and math.isnan(rows[1]["loss"]) and rows[1]["nonfinite_steps"] == 1
    (b1, s1), (_, s2) = buffers(folder, 1), buffers(folder, 2)
    assert any("running_mean" in k for k in b1) and any(k.endswith("queue") for k in b1)
    assert int(b1["objective.updates"]) == 1 and int(b1["objective.ptr"]) == 32  # step 1 was applied
    for k in s1:  # the skipped step moved nothing: no queue entry, no BatchNorm statistic, no weight
        assert torch.equal(s1[k], s2[k]), k


def test_after_step_runs_once_per_step_under_accumulation_and_fills_the_queue_in_order(tiny):
    folder = run(queue_config(tiny, "trainer.max_steps=3", "trainer.accumulate=2"))
    b, state = buffers(folder, 3)
    assert int(b["objective.updates"]) == 3  # not 6: once per optimizer step
    assert int(b["objective.ptr"]) == 3 * 32 % 48
    # the queue holds the last 48 of the 96 draws, both micro-batches of each step, in draw order
    d = ImageDomain()
    views = Views(d.dataset("train"), d, 0, 2)
    labels = torch.tensor([views[k]["y"] for k in range(96)])
    want = torch.empty(48, dtype=torch.long)
    for k in range(96):
        want[k % 48] = labels[k]
    assert torch.equal(state["objective.queue_y"], want)


def test_sched_carries_the_step_and_the_run_length(tiny, monkeypatch):
    seen, real = [], toys.QueueContrast.forward

    def record(self, encoder, batch, sched):
        seen.append(dict(sched))
        return real(self, encoder, batch, sched)
    monkeypatch.setattr(toys.QueueContrast, "forward", record)
    run(queue_config(tiny, "trainer.max_steps=3", "trainer.accumulate=2"))
    assert [s["step"] for s in seen] == [0, 0, 1, 1, 2, 2]  # one forward per micro-batch
    assert all(s["total_steps"] == 3 for s in seen)
    assert {"step", "total_steps", "progress", "lr", "wd", "ema"} <= set(seen[0])
    assert [s["progress"] for s in seen[::2]] == pytest.approx([0, 1 / 3, 2 / 3])


@pytest.mark.parametrize("accumulate", [1, 2])
def test_vicreg_terms_reach_metrics_and_tensorboard_under_its_name(tiny, accumulate):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    folder = tiny.run("objective=vicreg", "trainer.max_steps=2", f"trainer.accumulate={accumulate}")
    rows = [r for r in tiny.metrics(folder) if "loss" in r]
    for r in rows:
        # the loss is its terms' weighted sum (paper weights 25 / 25 / 1), each averaged over micro-batches
        assert r["loss"] == pytest.approx(25 * r["vicreg/inv"] + 25 * r["vicreg/var"] + r["vicreg/cov"], rel=1e-5)
    acc = EventAccumulator(str(folder / "tb"))
    acc.Reload()
    assert {"vicreg/inv", "vicreg/var", "vicreg/cov"} <= set(acc.Tags()["scalars"])
    assert [e.value for e in acc.Scalars("vicreg/inv")] == pytest.approx([r["vicreg/inv"] for r in rows])


def test_byol_and_simclr_log_their_agreement(tiny):
    rows = [r for r in tiny.metrics(tiny.run("objective=byol", "trainer.max_steps=2", name="byol")) if "loss" in r]
    for r in rows:  # 2 views: loss = sum over both directions of 2 - 2 cos = 4 (1 - mean cos)
        assert r["loss"] == pytest.approx(4 * (1 - r["byol/cos"]), rel=1e-5)
    rows = [r for r in tiny.metrics(tiny.run("objective=simclr", "trainer.max_steps=1", name="simclr")) if "loss" in r]
    assert -1 <= rows[0]["simclr/pos_cos"] <= 1


def test_objective_state_is_checkpointed_and_restored(tiny):
    folder = run(queue_config(tiny, "trainer.max_steps=2", name="q"))
    b, _ = buffers(folder, 2)
    cfg = queue_config(tiny, "trainer.max_steps=3", name="q")
    run(cfg)  # resumes from step 2: the queue continues where it was
    b3, _ = buffers(folder, 3)
    assert int(b3["objective.updates"]) == 3 and int(b3["objective.ptr"]) == (int(b["objective.ptr"]) + 32) % 48
