"""Schedules (warmup + cosine, lr scaling) and optimizers (no-decay groups, LARS against a hand-written
update)."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from multissl.optim import LARS, apply_schedule, build_optimizer, lr_multiple, param_groups
from multissl.schedules import cosine, linear, scaled_lr, step_values


def test_cosine_warmup_then_decay():
    start, end, total, warmup = 2.0, 0.2, 100, 10
    for s in range(warmup + 1):
        assert cosine(s, total, start, end, warmup) == pytest.approx(start * s / warmup)
    assert cosine(0, total, start, end, warmup) == 0.0
    assert cosine(warmup, total, start, end, warmup) == pytest.approx(start)
    assert cosine(total, total, start, end, warmup) == pytest.approx(end)
    assert cosine(total + 50, total, start, end, warmup) == pytest.approx(end)
    # halfway through the cosine part: the mean of start and end
    assert cosine(warmup + 45, total, start, end, warmup) == pytest.approx((start + end) / 2)
    after = [cosine(s, total, start, end, warmup) for s in range(warmup, total + 1)]
    assert all(a > b for a, b in zip(after, after[1:]))


def test_cosine_warmup_from_and_increasing():
    assert cosine(0, 10, 1.0, 0.5, warmup=4, warmup_from=0.2) == pytest.approx(0.2)
    assert cosine(2, 10, 1.0, 0.5, warmup=4, warmup_from=0.2) == pytest.approx(0.6)
    # an increasing schedule (EMA momentum 0.99 -> 1)
    vals = [cosine(s, 20, 0.99, 1.0) for s in range(21)]
    assert vals[0] == pytest.approx(0.99) and vals[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(vals, vals[1:]))


def test_scaled_lr_rules():
    assert scaled_lr(0.3, 512, "linear") == pytest.approx(0.6)
    assert scaled_lr(0.3, 64, "linear") == pytest.approx(0.075)
    assert scaled_lr(0.3, 1024, "sqrt") == pytest.approx(0.6)
    assert scaled_lr(0.3, 64, "sqrt") == pytest.approx(0.15)
    assert scaled_lr(0.3, 64, "none") == 0.3
    with pytest.raises(ValueError):
        scaled_lr(0.3, 64, "cubic")


def test_step_values_short_run_still_learns():
    optim = SimpleNamespace(warmup_steps=50, min_lr_ratio=0.0, weight_decay=0.05, weight_decay_end=0.05)
    ema = SimpleNamespace(start=0.99, end=1.0)
    # a 1-step run cannot spend its only step warming up from lr 0
    assert step_values(0, 1, optim, ema, 0.1)["lr"] == pytest.approx(0.1)
    v = step_values(0, 10, optim, ema, 0.1)
    assert v["ema"] == pytest.approx(0.99) and v["wd"] == pytest.approx(0.05) and v["progress"] == 0.0
    assert step_values(10, 10, optim, ema, 0.1)["ema"] == pytest.approx(1.0)


def tiny_module():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2))
    frozen = nn.Linear(2, 2)
    frozen.requires_grad_(False)
    m.append(frozen)
    return m


def test_param_groups_exempts_biases_and_norms():
    m = tiny_module()
    decay, no_decay = param_groups(m)
    assert decay["exclude"] is False and no_decay["exclude"] is True and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}
    assert ids(decay["params"]) == ids([m[0].weight, m[3].weight])
    assert ids(no_decay["params"]) == ids([m[0].bias, m[1].weight, m[1].bias, m[3].bias])


def test_lars_matches_hand_written_update():
    lr, wd, mom, eta = 0.5, 0.01, 0.9, 0.02
    w = nn.Parameter(torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    b = nn.Parameter(torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    zero = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    holder = nn.Module()
    holder.w, holder.b, holder.zero = w, b, zero
    opt = LARS(param_groups(holder), lr=lr, weight_decay=wd, momentum=mom, eta=eta)

    ref_w, ref_b, ref_z = w.detach().clone(), b.detach().clone(), zero.detach().clone()
    buf_w, buf_b, buf_z = torch.zeros_like(ref_w), torch.zeros_like(ref_b), torch.zeros_like(ref_z)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        gw = torch.randn(4, 3, dtype=torch.float64, generator=g)
        gb = torch.randn(4, dtype=torch.float64, generator=g)
        gz = torch.randn(2, 2, dtype=torch.float64, generator=g)
        w.grad, b.grad, zero.grad = gw.clone(), gb.clone(), gz.clone()
        opt.step()

        # 2-D weight: weight decay, then layer-wise trust ratio eta*|p|/|g + wd p|, then momentum
        d = gw + wd * ref_w
        trust = eta * math.sqrt((ref_w ** 2).sum().item()) / math.sqrt((d ** 2).sum().item())
        buf_w = mom * buf_w + trust * d
        ref_w = ref_w - lr * buf_w
        # a zero-norm 2-D weight: trust ratio falls back to 1
        dz = gz + wd * ref_z
        zn = math.sqrt((ref_z ** 2).sum().item())
        buf_z = mom * buf_z + (eta * zn / math.sqrt((dz ** 2).sum().item()) if zn > 0 else 1.0) * dz
        ref_z = ref_z - lr * buf_z
        # 1-D bias: plain momentum SGD, no decay, no adaptation
        buf_b = mom * buf_b + gb
        ref_b = ref_b - lr * buf_b

        torch.testing.assert_close(w.detach(), ref_w, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b.detach(), ref_b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(zero.detach(), ref_z, rtol=1e-12, atol=1e-12)


def test_build_optimizer_groups():
    m = tiny_module()
    opt = build_optimizer("adamw", [m], 1e-3, 0.05, (0.9, 0.95))
    assert isinstance(opt, torch.optim.AdamW)
    by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_id[id(m[0].weight)]["weight_decay"] == 0.05 and by_id[id(m[3].weight)]["weight_decay"] == 0.05
    for p in (m[0].bias, m[1].weight, m[1].bias, m[3].bias):
        assert by_id[id(p)]["weight_decay"] == 0.0
    assert all(g["betas"] == (0.9, 0.95) and g["lr"] == 1e-3 for g in opt.param_groups)
    assert id(m[4].weight) not in by_id  # frozen parameters are not optimized

    lars = build_optimizer("lars", [m], 0.1, 1e-6)
    assert isinstance(lars, LARS)
    assert sorted(g["weight_decay"] for g in lars.param_groups) == [0.0, 1e-6]
    with pytest.raises(ValueError):
        build_optimizer("sgd", [m], 0.1, 0.0)


@pytest.mark.parametrize("name", ["adamw", "lars"])
def test_lr_scale_gets_its_own_groups(name):
    m = tiny_module()
    m[3].weight.lr_scale = m[3].bias.lr_scale = 10.0
    opt = build_optimizer(name, [m], 1e-3, 0.05)
    by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert by_id[id(m[3].weight)]["lr"] == pytest.approx(1e-2) and by_id[id(m[3].weight)]["weight_decay"] == 0.05
    assert by_id[id(m[3].bias)]["lr"] == pytest.approx(1e-2) and by_id[id(m[3].bias)]["weight_decay"] == 0.0
    assert by_id[id(m[0].weight)]["lr"] == pytest.approx(1e-3) and by_id[id(m[1].bias)]["lr"] == pytest.approx(1e-3)
    assert len(opt.param_groups) == 4


def test_an_lr_multiple_ramps_up_from_one_over_its_warmup():
    m = tiny_module()
    m[3].weight.lr_scale, m[3].weight.lr_scale_warmup = 30.0, 10
    opt = build_optimizer("adamw", [m], 1e-3, 0.05)
    group = next(g for g in opt.param_groups if any(p is m[3].weight for p in g["params"]))
    plain = next(g for g in opt.param_groups if any(p is m[0].weight for p in g["params"]))
    assert group["lr"] == pytest.approx(1e-3)  # step 0: 1x
    for step, multiple in [(0, 1.0), (5, 15.5), (10, 30.0), (50, 30.0)]:
        apply_schedule(opt, {"step": step, "lr": 2e-3, "wd": 0.01})
        assert group["lr"] == pytest.approx(2e-3 * multiple) and plain["lr"] == pytest.approx(2e-3)
        assert group["weight_decay"] == 0.01
    assert lr_multiple({"lr_scale": 4.0}, 0) == 4.0  # no warm-up: the multiple at once


def test_linear_schedule_reaches_its_end_and_stays():
    assert [linear(s, 4, 0.04, 0.07) for s in (0, 2, 4, 9)] == pytest.approx([0.04, 0.055, 0.07, 0.07])
    assert linear(0, 0, 0.04, 0.07) == 0.07  # no warm-up


def test_step_values_carry_the_step_and_the_run_length():
    cfg = SimpleNamespace(warmup_steps=2, min_lr_ratio=0.0, weight_decay=0.05, weight_decay_end=0.05)
    v = step_values(3, 10, cfg, SimpleNamespace(start=0.9, end=1.0), 1e-3)
    assert v["step"] == 3 and v["total_steps"] == 10 and v["progress"] == pytest.approx(0.3)
