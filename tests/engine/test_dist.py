"""multissl/dist.py: the plain collectives on one process, the BatchNorm swap that keeps the Parameters the
optimizer reads (both classes), and the bucketed gradient average on 2 gloo processes (this file run as a script
is one of them). The engine's 2-process behaviour is in test_distributed.py."""
import copy
import os
import sys

import pytest
import torch
from torch import nn

from multissl import dist
from multissl.heads import mlp
from multissl.optim import param_groups

# gradients of mixed dtypes, one None; with BUCKET bytes per all-reduce the float32 ones go as [0, 2] [5] [7]
# (5 alone: larger than a bucket) and the float64 ones as [1, 4, 6]: 4 all-reduces of these many elements
SHAPES = [((4, 8), torch.float32), ((8,), torch.float64), ((8,), torch.float32), ((3,), torch.float32),
          ((4, 4), torch.float64), ((100,), torch.float32), ((3,), torch.float64), ((2, 3), torch.float32)]
NO_GRAD, BUCKET, CALLS = 3, 256, [40, 100, 6, 27]


def gradients(rank: int) -> nn.ParameterList:
    """SHAPES' parameters with this rank's gradients (None for NO_GRAD)."""
    g, out = torch.Generator().manual_seed(rank), nn.ParameterList()
    for i, (shape, dtype) in enumerate(SHAPES):
        out.append(nn.Parameter(torch.zeros(shape, dtype=dtype)))
        if i != NO_GRAD:
            out[i].grad = torch.randn(shape, generator=g, dtype=dtype)
    return out


def average_on(rank: int, init: str, out: str):
    """One of the 2 processes: average_gradients with BUCKET-byte buckets, saving what it left and the
    all-reduces it made."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=2)
    params, calls, all_reduce = gradients(rank), [], torch.distributed.all_reduce
    grads = [p.grad for p in params]
    torch.distributed.all_reduce = lambda t, *a, **k: calls.append(t.numel()) or all_reduce(t, *a, **k)
    dist.average_gradients(params, bucket_bytes=BUCKET)
    torch.save({"grads": [p.grad for p in params], "in_place": [p.grad is g for p, g in zip(params, grads)],
                "calls": calls}, out)
    torch.distributed.barrier()


@pytest.mark.distributed
def test_bucketed_gradient_average_on_two_processes_is_the_per_parameter_mean(tmp_path):
    """Bitwise the mean a per-parameter all-reduce gives (a sum of two adds in any order), in fewer all-reduces,
    in place, None gradients left None, on both processes."""
    from tiny import run_two_processes  # here: this file is also the processes' script, run without tests/ on sys.path
    saved = run_two_processes(__file__, tmp_path)
    want = [None if a.grad is None else (a.grad + b.grad) / 2 for a, b in zip(gradients(0), gradients(1))]
    for r, got in enumerate(saved):
        assert got["calls"] == CALLS and all(got["in_place"])
        assert [g is None for g in got["grads"]] == [w is None for w in want]
        for i, (g, w) in enumerate(zip(got["grads"], want)):
            assert w is None or (g.dtype == w.dtype and torch.equal(g, w)), (r, i)


def test_average_gradients_on_one_process_leaves_them():
    params = gradients(0)
    before = [None if p.grad is None else p.grad.clone() for p in params]
    dist.average_gradients(params)
    assert all(b is None if p.grad is None else torch.equal(p.grad, b) for p, b in zip(params, before))


@pytest.mark.parametrize("device, cls", [(None, dist.GlobalBatchNorm), ("cpu", dist.GlobalBatchNorm),
                                         ("cuda", nn.SyncBatchNorm), (torch.device("cuda", 1), nn.SyncBatchNorm)])
def test_batchnorm_swap_keeps_the_parameters_their_attributes_and_requires_grad(device, cls):
    """BYOL's predictor runs at lr_scale x the lr, an attribute on its Parameters. A GlobalBatchNorm built with
    copies of them ran the predictor's BatchNorm at 1x on 2 processes (losses parted by 1e-3 from step 3), and
    gave a frozen teacher's BatchNorm trainable copies. On a cuda device the swap is to torch's SyncBatchNorm
    (only built here: its synchronizing forward needs CUDA), on others to GlobalBatchNorm; both keep them."""
    head, teacher = mlp([4, 8, 4]), mlp([4, 8, 4]).requires_grad_(False).eval()
    plain = nn.BatchNorm2d(3, affine=False, track_running_stats=False)
    for p in head.parameters():
        p.lr_scale, p.lr_scale_warmup = 30.0, 10
    with torch.no_grad():
        head[1].running_mean.fill_(0.5)
    x, reference = torch.randn(6, 4), copy.deepcopy([head, teacher])
    before = [id(t) for t in (*head.parameters(), *teacher.parameters(), *head.buffers(), *teacher.buffers())]
    model = dist.sync_batchnorm(nn.ModuleList([head, teacher, plain]), device=device)
    assert [type(m) for m in (model[0][1], model[1][1], model[2])] == [cls] * 3
    assert [id(t) for t in (*model[0].parameters(), *model[1].parameters(), *model[0].buffers(),
                            *model[1].buffers())] == before
    assert model[0].training and not model[1].training and not model[1][1].training
    assert model[2].weight is None and model[2].running_mean is None
    assert torch.equal(model[0][1].running_mean, torch.full((8,), 0.5))  # statistics carried over
    assert all((p.lr_scale, p.lr_scale_warmup) == (30.0, 10) for p in model[0].parameters())
    assert not any(p.requires_grad for p in model[1].parameters())
    groups = [(g["lr_scale"], g["lr_scale_warmup"], len(g["params"])) for g in param_groups(model)]
    assert groups == [(30.0, 10, 2), (30.0, 10, 3)]  # the head only: weights; biases and BatchNorm; no teacher
    for m, r in zip(model, reference):  # outside a process group: plain BatchNorm
        torch.testing.assert_close(m(x), r(x), rtol=0, atol=0)
    torch.testing.assert_close(model[0][1].running_mean, reference[0][1].running_mean, rtol=0, atol=0)


def test_plain_collectives_on_one_process_are_copies_without_gradient():
    x = torch.randn(3, 2, requires_grad=True)
    for out in (dist.all_gather(x), dist.all_reduce(x), dist.all_reduce(x, "mean")):
        assert torch.equal(out, x.detach()) and not out.requires_grad
    y = dist.all_reduce(x)
    y += 1
    assert not torch.equal(y, x.detach())  # a new tensor: x is unchanged
    with pytest.raises(ValueError, match="sum or mean"):
        dist.all_reduce(x, "max")


if __name__ == "__main__":  # one process of test_bucketed_gradient_average_on_two_processes_is_the_per_parameter_mean
    torch.set_num_threads(1)
    average_on(int(sys.argv[1]), sys.argv[2], sys.argv[3])
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: gloo's threads sometimes abort there (as tests/engine/dist_worker.py)
