"""AdamW and LARS with the SSL convention: biases and normalization parameters get no weight decay
and no LARS adaptation."""
import torch
from torch import nn


def param_groups(*modules: nn.Module) -> list[dict]:
    """Groups by (exempt from decay, lr_scale, lr_scale_warmup). A module may set `p.lr_scale` on its
    parameters to run them at a multiple of the scheduled lr (BYOL's predictor), reached from 1x over
    `p.lr_scale_warmup` steps (0 = at once); the engine applies both every step (`apply_schedule`)."""
    groups = {}
    for m in modules:
        for p in m.parameters():
            if p.requires_grad:
                # 1-D tensors are biases, norm scales/shifts, cls tokens' rows: exempt.
                key = (p.ndim <= 1, float(getattr(p, "lr_scale", 1.0)), int(getattr(p, "lr_scale_warmup", 0)))
                groups.setdefault(key, []).append(p)
    return [{"params": ps, "exclude": ex, "lr_scale": sc, "lr_scale_warmup": wu,
             **({"weight_decay": 0.0} if ex else {})} for (ex, sc, wu), ps in sorted(groups.items())]


def lr_multiple(group: dict, step: int) -> float:
    """A group's multiple of the scheduled lr at `step`: lr_scale, ramped linearly from 1 over lr_scale_warmup."""
    scale, warmup = group.get("lr_scale", 1.0), group.get("lr_scale_warmup", 0)
    return scale if step >= warmup else 1 + (scale - 1) * step / warmup


def apply_schedule(optimizer, sched: dict):
    """This step's lr (times each group's multiple) and weight decay (none for exempt groups)."""
    for g in optimizer.param_groups:
        g["lr"] = sched["lr"] * lr_multiple(g, sched["step"])
        g["weight_decay"] = 0.0 if g.get("exclude") else sched["wd"]


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
        g["lr"] = lr * lr_multiple(g, 0)
    if name == "adamw":  # the "exclude" key rides along in the group; AdamW ignores it
        return torch.optim.AdamW(groups, betas=tuple(betas))
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay)  # each group's own lr overrides
    raise ValueError(f"optim.name must be adamw or lars, got {name!r}")


def scale_lr(module: nn.Module, factor: float) -> nn.Module:
    """Marks `module`'s parameters to run at `factor` x the scheduled lr (a predictor that must outpace its target:
    BYOL, SimSiam, SPR); param_groups reads the mark."""
    for p in module.parameters():
        p.lr_scale = factor
    return module
