"""Checkpoints: atomic writes, retention, RNG round trip, and loading never runs pickled code."""
import os
import pickle
import random
import shlex

import pytest
import torch

from multissl import checkpoint
from multissl.errors import UserError
from multissl.train import run


def state(step: int) -> dict:
    return {"model": {"w": torch.full((3, 2), float(step))}, "step": step, "rng": checkpoint.rng_state()}


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    first = checkpoint.save(folder, 1, state(1))
    assert first.name == "step_00000001.pt"

    real_save, targets = torch.save, []

    def dying_save(obj, f, *a, **k):  # writes half a file, then fails
        targets.append(f.name)
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError("failed mid-write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(UserError, match=rf"cannot write checkpoint step_00000002.pt in {folder}: failed mid-write; "
                                        r"the previous checkpoint is kept"):
        checkpoint.save(folder, 2, state(2))
    monkeypatch.setattr(torch, "save", real_save)

    assert targets and os.path.basename(targets[0]) != "step_00000002.pt"
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000001.pt"]  # no temporary file left
    assert checkpoint.latest(folder) == first
    loaded = checkpoint.load(first)
    assert loaded["step"] == 1 and torch.equal(loaded["model"]["w"], torch.full((3, 2), 1.0))


def test_keep_retains_newest(tmp_path):
    folder = tmp_path / "c"
    for s in (1, 2, 3, 4):
        checkpoint.save(folder, s, state(s), keep=2)
    assert sorted(p.name for p in folder.glob("step_*.pt")) == ["step_00000003.pt", "step_00000004.pt"]
    assert checkpoint.latest(folder).name == "step_00000004.pt"
    checkpoint.save(folder, 10, state(10), keep=3)
    assert sorted(p.name for p in folder.glob("step_*.pt")) == \
        ["step_00000003.pt", "step_00000004.pt", "step_00000010.pt"]
    assert checkpoint.latest(tmp_path / "missing") is None


def test_rng_state_round_trip(tmp_path):
    path = checkpoint.save(tmp_path, 1, state(1))
    want = (torch.rand(4), [random.random() for _ in range(4)])
    checkpoint.set_rng_state(checkpoint.load(path)["rng"])  # loads weights_only, restores both RNGs
    got = (torch.rand(4), [random.random() for _ in range(4)])
    assert torch.equal(got[0], want[0]) and got[1] == want[1]


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def write_evil(path, marker, how):
    payload = {"model": Evil(marker), "step": 5}
    if how == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_load_refuses_code_in_pickle(tmp_path, how):
    marker = tmp_path / "MARKER"
    path = tmp_path / "step_00000005.pt"
    write_evil(path, marker, how)
    assert not marker.exists()
    with pytest.raises(UserError):
        checkpoint.load(path)
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it
    if how == "torch":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as f:
            pickle.load(f)
    assert marker.exists()


def test_run_refuses_malicious_checkpoint_in_run_dir(tiny, tmp_path):
    marker = tmp_path / "MARKER"
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    write_evil(ckpts / "step_00000005.pt", marker, "torch")
    with pytest.raises(UserError, match="step_00000005.pt"):
        run(tiny.config("trainer.max_steps=6", name="run"))
    assert not marker.exists()
