"""VICReg (Bardes et al. 2022): invariance + variance hinge + covariance decorrelation."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import gather
from multissl.encoder import encode_views, view_pairs
from multissl.heads import mlp


def variance_term(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on the per-dimension std: mean(relu(1 - sqrt(var + eps)))."""
    return F.relu(1 - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances, divided by the dimension."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = z.T @ z / (n - 1)  # [d d]
    return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d


def vicreg_terms(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-4) -> dict:
    """z_a, z_b [b d] on each process -> the three unweighted terms over the global batch."""
    z_a, z_b = gather(z_a), gather(z_b)
    return {"inv": F.mse_loss(z_a, z_b),
            "var": (variance_term(z_a, eps) + variance_term(z_b, eps)) / 2,
            "cov": covariance_term(z_a) + covariance_term(z_b)}


def vicreg_loss(z_a: torch.Tensor, z_b: torch.Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """z_a, z_b [b d] on each process; statistics over the global batch (paper coefficients 25/25/1)."""
    t = vicreg_terms(z_a, z_b, eps)
    return sim_coeff * t["inv"] + std_coeff * t["var"] + cov_coeff * t["cov"]


class VICReg(nn.Module):
    global_views = 2
    batch_statistics = True  # variance and covariance over the batch
    collapse_hint = "raise objective.std_coeff (the variance hinge keeps the dimensions apart)"

    def __init__(self, encoder, domain, projector=(256, 256), sim_coeff: float = 25.0, std_coeff: float = 25.0,
                 cov_coeff: float = 1.0):
        super().__init__()
        self.projector = mlp([encoder.dim, *projector])
        self.coeffs = {"inv": sim_coeff, "var": std_coeff, "cov": cov_coeff}

    def forward(self, encoder, batch, sched):
        reps = encode_views(encoder, batch["views"], batch.get("pad"))
        z = [self.projector(r) for r in reps]
        pairs = view_pairs(len(z))
        terms = [vicreg_terms(z[i], z[j]) for i, j in pairs]
        c = self.coeffs
        loss = sum(c["inv"] * t["inv"] + c["var"] * t["var"] + c["cov"] * t["cov"] for t in terms) / len(pairs)
        return loss, {"rep": reps[0].detach(), **{k: sum(t[k] for t in terms).detach() / len(pairs) for k in c}}
