"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of the two views' standardised projections is
pushed to the identity: invariance on the diagonal, redundancy reduction off it."""
import torch
from torch import nn

from multissl.dist import gather
from multissl.encoder import encode_views, view_pairs
from multissl.heads import mlp


def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """z [n d] -> each column at mean 0 and (biased) variance 1 over the batch: the reference code's BatchNorm
    without affine, in training mode."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


def cross_correlation(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """z_a, z_b [b d] on each process -> C [d d] = standardised z_a^T z_b / N over the global batch. Gathered
    (with gradient) before the statistics, so each process's rows are standardised by the whole batch and their
    gradient counts every process's loss."""
    a, b = standardize(gather(z_a), eps), standardize(gather(z_b), eps)
    return a.T @ b / a.shape[0]


def barlow_terms(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-5) -> dict:
    """-> on_diag = sum_i (1 - C_ii)^2 and off_diag = sum_{i != j} C_ij^2 (unweighted)."""
    c = cross_correlation(z_a, z_b, eps)
    diag = torch.diagonal(c)
    return {"on_diag": (1 - diag).pow(2).sum(), "off_diag": c.pow(2).sum() - diag.pow(2).sum()}


def barlow_loss(z_a: torch.Tensor, z_b: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> torch.Tensor:
    """z_a, z_b [b d] on each process: on_diag + lambd * off_diag over the global batch (the paper's lambda:
    5e-3 with 8192 dimensions)."""
    t = barlow_terms(z_a, z_b, eps)
    return t["on_diag"] + lambd * t["off_diag"]


class Barlow(nn.Module):
    global_views = 2
    batch_statistics = True  # standardisation and correlations over the batch
    collapse_hint = "raise objective.lambd (the off-diagonal term keeps the dimensions apart)"

    def __init__(self, encoder, domain, projector=(256, 256, 256), lambd: float = 0.02):
        super().__init__()
        dims = [encoder.dim, *projector]
        # the output Linear has no bias: the standardisation removes it, so it would get no gradient
        self.projector = mlp(dims, last_bias=False)
        self.lambd = lambd

    def forward(self, encoder, batch, sched):
        reps = encode_views(encoder, batch["views"], batch.get("pad"))  # n_views x [b d]
        z = [self.projector(r) for r in reps]
        pairs = view_pairs(len(z), self.global_views)
        terms = [barlow_terms(z[i], z[j]) for i, j in pairs]
        loss = sum(t["on_diag"] + self.lambd * t["off_diag"] for t in terms) / len(pairs)
        logs = {k: sum(t[k] for t in terms).detach() / len(pairs) for k in ("on_diag", "off_diag")}
        return loss, {"rep": reps[0].detach(), **logs}
