"""trainer.precision: bf16 and fp16 truly compute in half precision, on a CPU too, and an fp16 overflow skips one step,
halves the gradient scale and training goes on (multissl.precision)."""
import math

import pytest
import torch

import multissl.objectives.simclr as simclr
from multissl import checkpoint
from multissl.precision import Precision


def record_dtypes(monkeypatch, scale_at=None):
    """What reaches SimCLR's loss: the projections' dtype on every call; on the calls in scale_at the loss is
    multiplied by 1e30 (finite in float32, but its gradients overflow float16)."""
    seen, real, calls = [], simclr.nt_xent_loss, {"n": 0}

    def patched(z1, z2, *a, **k):
        calls["n"] += 1
        seen.append(z1.dtype)
        out = real(z1, z2, *a, **k)
        return out * 1e30 if scale_at and calls["n"] in scale_at else out
    monkeypatch.setattr(simclr, "nt_xent_loss", patched)
    return seen


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_computes_in_half_precision(tiny, monkeypatch, name, dtype):
    seen = record_dtypes(monkeypatch)
    rows = [r for r in tiny.metrics(tiny.run("trainer.max_steps=2", f"trainer.precision={name}")) if "loss" in r]
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    assert seen and set(seen) == {dtype}  # the projector's output under autocast: its matmuls ran in half precision
    assert ("loss_scale" in rows[0]) == (name == "fp16")


def test_no_precision_computes_in_float32(tiny, monkeypatch):
    seen = record_dtypes(monkeypatch)
    tiny.run("trainer.max_steps=1")
    assert set(seen) == {torch.float32}


def test_an_fp16_overflow_skips_one_step_halves_the_scale_and_training_goes_on(tiny, monkeypatch):
    """Step 4's gradients overflow float16 (simclr scores both view orders: calls 7 and 8), after the scale has
    settled (a tiny model's first steps may overflow at the initial scale too, which is the scaler's job). The step is
    skipped and counted, the scaler halves its scale, and the next steps apply — before, the skipped step left the
    scaler unscaled and the next one failed with 'unscale_() has already been called'."""
    record_dtypes(monkeypatch, scale_at={7, 8})
    real = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda *a, **k: real(*a, **{**k, "keep": 100}))  # every step's kept
    folder = tiny.run("trainer.max_steps=6", "trainer.precision=fp16", "trainer.checkpoint_every=1",
                      "trainer.max_nonfinite=1")  # an overflow is the scaler's business, not a divergence
    rows = {r["step"]: r for r in tiny.metrics(folder) if "loss" in r}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6] and all(math.isfinite(r["loss"]) for r in rows.values())
    assert rows[4]["nonfinite_steps"] == rows[3]["nonfinite_steps"] + 1
    assert rows[6]["nonfinite_steps"] == rows[4]["nonfinite_steps"]  # steps 5 and 6 applied
    assert rows[4]["loss_scale"] == rows[3]["loss_scale"] / 2
    models = [checkpoint.load(folder / "checkpoints" / f"step_{s:08d}.pt")["model"] for s in (3, 4, 5)]
    weights = [k for k, v in models[0].items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(models[0][k], models[1][k]) for k in weights)  # step 4 skipped
    assert any(not torch.equal(models[1][k], models[2][k]) for k in weights)  # step 5 applied
    assert checkpoint.load(folder / "checkpoints" / "step_00000006.pt")["scaler"]["scale"] == rows[6]["loss_scale"]


def test_the_scaler_updates_on_a_skipped_step():
    """The unit: an overflow (inf gradient) with the step skipped still updates the scale, and the next unscale works."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    p = Precision("fp16", "cpu")
    for grad, apply in ((float("inf"), False), (1.0, True)):
        with p.autocast():
            loss = (w * grad).sum()
        p.backward(loss)
        p.unscale(opt)  # raised on the second step when the first did not update the scaler
        p.step(opt, apply)
        opt.zero_grad()
    assert p.scaler.get_scale() == 2.0 ** 15 and torch.allclose(w.detach(), torch.full((3,), 0.9))


def test_auto_is_bf16_on_a_cuda_device_that_has_it_and_float32_elsewhere(monkeypatch):
    from multissl.precision import resolve
    assert resolve("auto", "cpu") == "no" and Precision("auto", "cpu").dtype is None  # a CPU keeps float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve("auto", "cuda:0") == "bf16" and resolve("auto", "cpu") == "no"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # before Ampere
    assert resolve("auto", "cuda:0") == "no"
    assert [resolve(n, "cuda:0") for n in ("no", "bf16", "fp16")] == ["no", "bf16", "fp16"]  # as asked
