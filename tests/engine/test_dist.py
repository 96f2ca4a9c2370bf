"""multissl/dist.py on one process: the plain collectives, and the BatchNorm swap that keeps the Parameters the
optimizer reads (the 2-process behaviour is in test_distributed.py)."""
import pytest
import torch
from torch import nn

from multissl import dist
from multissl.heads import mlp
from multissl.optim import param_groups


def test_global_batchnorm_keeps_the_parameters_their_attributes_and_requires_grad():
    """BYOL's predictor runs at lr_scale x the lr, an attribute on its Parameters. A GlobalBatchNorm built with
    copies of them ran the predictor's BatchNorm at 1x on 2 processes (losses parted by 1e-3 from step 3), and
    gave a frozen teacher's BatchNorm trainable copies."""
    head, teacher = mlp([4, 8, 4]), mlp([4, 8, 4]).requires_grad_(False)
    for p in head.parameters():
        p.lr_scale, p.lr_scale_warmup = 30.0, 10
    with torch.no_grad():
        head[1].running_mean.fill_(0.5)
    before = [id(p) for p in (*head.parameters(), *teacher.parameters())]
    model = dist.sync_batchnorm(nn.ModuleList([head, teacher]))
    assert isinstance(model[0][1], dist.GlobalBatchNorm) and isinstance(model[1][1], dist.GlobalBatchNorm)
    assert [id(p) for p in model.parameters()] == before
    assert torch.equal(model[0][1].running_mean, torch.full((8,), 0.5))  # statistics carried over
    assert not any(p.requires_grad for p in model[1].parameters())
    groups = [(g["lr_scale"], g["lr_scale_warmup"], len(g["params"])) for g in param_groups(model)]
    assert groups == [(30.0, 10, 2), (30.0, 10, 3)]  # the head only: weights; biases and BatchNorm; no teacher


def test_plain_collectives_on_one_process_are_copies_without_gradient():
    x = torch.randn(3, 2, requires_grad=True)
    for out in (dist.all_gather(x), dist.all_reduce(x), dist.all_reduce(x, "mean")):
        assert torch.equal(out, x.detach()) and not out.requires_grad
    y = dist.all_reduce(x)
    y += 1
    assert not torch.equal(y, x.detach())  # a new tensor: x is unchanged
    with pytest.raises(ValueError, match="sum or mean"):
        dist.all_reduce(x, "max")
