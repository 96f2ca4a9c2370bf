"""LeJEPA (Balestriero & LeCun 2025, "LeJEPA: provable and scalable self-supervised learning without the heuristics"),
as the official code has it (github.com/rbalestr-lab/lejepa: lejepa/univariate/epps_pulley.py,
lejepa/multivariate/slicing.py and the training loop of MINIMAL.md).

No teacher, no stop-gradient, no predictor network: the loss is (1 - lambd) * prediction + lambd * SIGReg.
- prediction: every view's projection (local views too) regresses the mean of the global views' projections; a squared
  error averaged over samples, views and dimensions, with gradient through the mean as well.
- SIGReg (sketched isotropic Gaussian regularisation): each view's projections of the global batch are tested
  against N(0, I) along random unit directions. Along each direction the Epps-Pulley statistic
  N * integral of |ecf(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt compares the empirical characteristic function of the N
  projected samples with the standard normal one; the integrand is even, so the trapezoid rule runs on [0, t_max]
  with doubled weights. The mean over directions and views is the term. A standard Gaussian sample scores
  sum_k w_k (1 - exp(-t_k^2)) on average whatever N; a collapsed, shrunk or shifted one grows with N.
The directions are drawn afresh each step from a generator seeded by the step, so every process draws the same ones
and successive steps test other ones."""
import torch
from torch import nn

from multissl.dist import gather
from multissl.encoder import encode_views
from multissl.errors import UserError
from multissl.heads import mlp


def directions(dim: int, num_slices: int, step: int, device=None, dtype=None) -> torch.Tensor:
    """-> [dim num_slices] unit columns, a function of `step` alone (drawn in float64 on the CPU: the same numbers on
    every device and process)."""
    a = torch.randn(dim, num_slices, generator=torch.Generator().manual_seed(int(step)), dtype=torch.float64)
    return (a / a.norm(dim=0)).to(device=device, dtype=dtype)


def quadrature(t_max: float = 3.0, n_points: int = 17) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (t [T] evenly from 0 to t_max, w [T]): trapezoid weights over [-t_max, t_max] folded onto t >= 0, times
    the Gaussian window exp(-t^2/2)."""
    if n_points < 2:
        raise ValueError(f"n_points must be at least 2, got {n_points}")
    t = torch.linspace(0, t_max, n_points, dtype=torch.float64)
    dt = t_max / (n_points - 1)
    w = torch.full((n_points,), 2 * dt, dtype=torch.float64)
    w[[0, -1]] = dt
    return t, w * torch.exp(-t.square() / 2)


def epps_pulley(x: torch.Tensor, t_max: float = 3.0, n_points: int = 17) -> torch.Tensor:
    """x [N ...]: N samples of each 1-D projection -> the Epps-Pulley statistic of each [...] against N(0, 1)."""
    t, w = (u.to(x) for u in quadrature(t_max, n_points))
    xt = x.unsqueeze(-1) * t  # [N ... T]
    err = (torch.cos(xt).mean(0) - torch.exp(-t.square() / 2)).square() + torch.sin(xt).mean(0).square()  # [... T]
    return err @ w * x.shape[0]


def _sigreg(z: torch.Tensor, step: int, num_slices: int, t_max: float, n_points: int) -> torch.Tensor:
    """sigreg on rows already gathered."""
    # cos and sin of bf16 projections would be too coarse for the statistic: float32 at least, outside autocast
    with torch.autocast(z.device.type, enabled=False):
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        a = directions(z.shape[-1], num_slices, step, z.device, z.dtype)  # [K S]
        return epps_pulley(z @ a, t_max, n_points).mean()  # [B ... S] -> mean over slices (and views)


def sigreg(z: torch.Tensor, step: int, num_slices: int = 256, t_max: float = 3.0, n_points: int = 17) -> torch.Tensor:
    """z [b K] (or [b v K]: each view tested on its own, along the same directions) on each process -> the mean over
    num_slices unit directions (seeded by `step`) of the Epps-Pulley statistic of the global batch's projections."""
    return _sigreg(gather(z), step, num_slices, t_max, n_points)


def lejepa_terms(z: torch.Tensor, step: int, n_global: int = 2, num_slices: int = 256, t_max: float = 3.0,
                 n_points: int = 17) -> dict:
    """z [b v K] on each process, the v views on axis 1 with the n_global global views first -> {"pred", "sigreg"},
    unweighted, over the global batch."""
    z = gather(z)  # [B v K]
    centre = z[:, :n_global].mean(1, keepdim=True)  # [B 1 K]
    return {"pred": (centre - z).square().mean(), "sigreg": _sigreg(z, step, num_slices, t_max, n_points)}


def lejepa_loss(z: torch.Tensor, step: int, n_global: int = 2, lambd: float = 0.05, **test) -> torch.Tensor:
    """(1 - lambd) * prediction + lambd * SIGReg of z [b v K]; `test`: num_slices=, t_max=, n_points= of sigreg."""
    t = lejepa_terms(z, step, n_global, **test)
    return (1 - lambd) * t["pred"] + lambd * t["sigreg"]


class LeJEPA(nn.Module):
    global_views = 2
    local_views = 6  # the official recipe's 2 global + 6 local crops
    batch_statistics = True  # the characteristic function is over the global batch
    collapse_hint = "raise objective.lambd (SIGReg's weight, which pulls the embeddings to an isotropic Gaussian)"

    def __init__(self, encoder, domain, projector=(256, 256, 64), lambd: float = 0.05, num_slices: int = 256,
                 t_max: float = 3.0, n_points: int = 17):
        super().__init__()
        if not 0 <= lambd <= 1 or num_slices < 1 or n_points < 2:
            raise UserError(f"objective.lambd must lie in [0, 1], objective.num_slices be at least 1 and "
                            f"objective.n_points at least 2, got {lambd}, {num_slices} and {n_points}")
        # the official projector: Linear-BN-ReLU blocks, then a plain Linear
        self.projector = mlp([encoder.dim, *projector])
        self.lambd = lambd
        self.test = {"num_slices": num_slices, "t_max": t_max, "n_points": n_points}

    def forward(self, encoder, batch, sched):
        reps = encode_views(encoder, batch["views"], batch.get("pad"))  # n_views x [b d]
        # one projector pass over every view: its BatchNorm sees all crops together, as the official loop does
        z = torch.stack(self.projector(torch.cat(reps)).split([len(r) for r in reps]), 1)  # [b v K]
        t = lejepa_terms(z, sched["step"], min(self.global_views, len(reps)), **self.test)
        loss = (1 - self.lambd) * t["pred"] + self.lambd * t["sigreg"]
        return loss, {"rep": reps[0].detach(), "pred": t["pred"].detach(), "sigreg": t["sigreg"].detach()}
