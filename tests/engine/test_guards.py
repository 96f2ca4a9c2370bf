"""Runs that survive: non-finite steps skipped and counted, a stop after too many, SIGTERM checkpoints,
SIGKILL + relaunch resumes exactly, collapse is flagged."""
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

import multissl.objectives.simclr as simclr
from multissl import checkpoint
from multissl.errors import UserError

from forked import Forked
from tiny import write_image_shards

TINY_CLI = ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "data.batch_size=32", "trainer.log_every=1",
            "trainer.eval_every=0", "trainer.eval_samples=256"]


def nan_on_calls(monkeypatch, calls):
    real, count = simclr.nt_xent_loss, {"n": 0}

    def patched(*a, **k):
        count["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if count["n"] in calls else out
    monkeypatch.setattr(simclr, "nt_xent_loss", patched)


def test_nonfinite_step_is_skipped_and_counted(tiny, monkeypatch):
    nan_on_calls(monkeypatch, {3, 4})  # simclr scores both view orders: 2 calls per step -> step 2
    folder = tiny.run("trainer.max_steps=4")
    rows = [r for r in tiny.metrics(folder) if "loss" in r]
    assert math.isnan(rows[1]["loss"]) and rows[-1]["nonfinite_steps"] == 1
    assert all(math.isfinite(r["loss"]) for r in rows if r["step"] != 2)
    state = checkpoint.load(checkpoint.latest(folder / "checkpoints"))
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_consecutive_nonfinite_stop_keeps_last_good_checkpoint(tiny, monkeypatch):
    nan_on_calls(monkeypatch, set(range(5, 100)))  # from step 3 on
    with pytest.raises(UserError, match="3 consecutive steps had a non-finite"):
        tiny.run("trainer.max_steps=20", "trainer.checkpoint_every=1", "trainer.max_nonfinite=3")
    folder = tiny.root / "run"
    last = checkpoint.latest(folder / "checkpoints")
    state = checkpoint.load(last)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_collapse_warning(tiny, capsys):
    tiny.run("trainer.max_steps=1", "trainer.collapse_rankme=1000")  # any real RankMe is below 1000
    assert tiny.metrics(tiny.root / "run")[-1]["collapse_warning"] == 1
    assert "looks collapsed" in capsys.readouterr().err


def launch(tmp_path, name, *extra):
    """`python -m multissl.train` as a process of its own (forked from a server that imported the engine once)."""
    return Forked(["-m", "multissl.train", *TINY_CLI, f"run.dir={tmp_path / name}", *extra],
                  {**os.environ, "OMP_NUM_THREADS": "1"}, tmp_path)


def losses(folder):
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("objective,data", [("meanshift", "shards"), ("ibot", "digits")])
def test_sigkill_then_relaunch_gives_identical_losses_and_objective_state(tmp_path, objective, data):
    """An objective with a bank (a queue) and a teacher (meanshift) and one with two centres, a teacher, a mask token
    and a mask per view (ibot; dino's centre and teacher are a part of it), all in buffers: the relaunch
    after a SIGKILL logs the losses of a run that was never stopped and ends in the same state, bit for bit —
    from shards (images read by index from LitData chunks) as from the digits."""
    path = (f"data.path={write_image_shards(tmp_path)}",) if data == "shards" else ()
    args = ("trainer.max_steps=16", "trainer.checkpoint_every=8", f"objective={objective}", *path)
    straight = launch(tmp_path, "straight", *args)  # runs beside the killed one: both cores busy either way
    p = launch(tmp_path, "killed", *args)
    ckpt = tmp_path / "killed" / "checkpoints" / "step_00000008.pt"
    while not ckpt.exists() and p.poll() is None:
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait(60)
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert checkpoint.latest(tmp_path / "killed" / "checkpoints") == ckpt
    checkpoint.load(ckpt)  # the checkpoint written before the kill is whole
    assert launch(tmp_path, "killed", *args).wait(300) == 0 and straight.wait(300) == 0
    resumed, once = losses(tmp_path / "killed"), losses(tmp_path / "straight")
    assert [s for s, _ in resumed] == list(range(1, 17))
    assert resumed == once  # bit-identical
    a, b = (checkpoint.load(tmp_path / run / "checkpoints" / "step_00000016.pt")["model"] for run in ("straight", "killed"))
    assert a.keys() == b.keys() and any(k.startswith("objective.") for k in a)
    for k in a:  # parameters, the teacher, BatchNorm statistics, the queue or centre: everything
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_sigterm_prints_the_command_that_resumes(tmp_path):
    """Without run.dir the folder is named by the time: relaunching the same command would start a new run, so
    the message gives the command with trainer.resume=<folder>, and following it finishes the run."""
    p = subprocess.Popen([sys.executable, "-m", "multissl.train", *TINY_CLI, "trainer.max_steps=40",
                          "trainer.checkpoint_every=0"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    while p.poll() is None and not any(m.read_text() for m in tmp_path.glob("runs/*/metrics.jsonl")):
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM" in err and "checkpoint saved" in err and "Traceback" not in err
    (folder,) = tmp_path.glob("runs/*")
    stopped = checkpoint.load(checkpoint.latest(folder / "checkpoints"))["step"]
    assert 1 <= stopped < 40
    command = err.split("to resume, run: ")[1].splitlines()[0]
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "multissl.train"] and argv[-1] == f"trainer.resume={folder.resolve()}"
    again = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming {folder}" in again.stderr and f"from step {stopped}" in again.stderr
    assert [s for s, _ in losses(folder)] == list(range(1, 41))  # one run, continued, each step once
    assert list(tmp_path.glob("runs/*")) == [folder]
