"""AdamW and LARS with the SSL convention: biases and normalization parameters get no weight decay
and no LARS adaptation."""
import torch
from torch import nn


def param_groups(*modules: nn.Module) -> list[dict]:
    decay, no_decay = [], []
    for m in modules:
        for p in m.parameters():
            if p.requires_grad:
                # 1-D tensors are biases, norm scales/shifts, cls tokens' rows: exempt.
                (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "exclude": False}, {"params": no_decay, "exclude": True, "weight_decay": 0.0}]


class LARS(torch.optim.Optimizer):
    """SGD + momentum with layer-wise trust ratio (You et al. 2017), as used by SimCLR/BYOL/VICReg."""

    def __init__(self, params, lr: float, weight_decay: float = 1e-6, momentum: float = 0.9, eta: float = 0.02):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if not g["exclude"]:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    p_norm, d_norm = torch.norm(p), torch.norm(dp)
                    q = torch.where((p_norm > 0) & (d_norm > 0), g["eta"] * p_norm / d_norm, torch.ones_like(p_norm))
                    dp = dp.mul(q)
                buf = self.state[p].setdefault("mu", torch.zeros_like(p))
                buf.mul_(g["momentum"]).add_(dp)
                p.add_(buf, alpha=-g["lr"])


def build_optimizer(name: str, modules, lr: float, weight_decay: float, betas=(0.9, 0.95)):
    groups = param_groups(*modules)
    for g in groups:
        g.setdefault("weight_decay", weight_decay)
    if name == "adamw":  # the "exclude" key rides along in the group; AdamW ignores it
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optim.name must be adamw or lars, got {name!r}")
