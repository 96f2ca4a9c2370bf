"""VICReg (Bardes et al. 2022): invariance + variance hinge + covariance decorrelation; and the two variants of
Garrido et al. 2023 that show its duality with contrastive learning: VICReg-exp (`covariance="lse"`: each dimension's
off-diagonal covariances through a log-sum-exp instead of squares) and VICReg-ctr (`axis="samples"` as well: the
variance and log-sum-exp terms applied to the transposed embeddings, so they act on the embeddings' spread and on
their Gram matrix, which makes it a sample-contrastive loss)."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import gather
from multissl.encoder import encode_views, view_pairs
from multissl.errors import UserError
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


def lse_term(z: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """VICReg-exp's covariance term: (1/d) sum_i log sum_{j != i} exp(C_ij / temperature), C the covariance of z."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = z.T @ z / (n - 1)  # [d d]
    off = cov.masked_fill(torch.eye(d, dtype=torch.bool, device=z.device), float("-inf"))
    return torch.logsumexp(off / temperature, dim=1).mean()


def vicreg_terms(z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-4, covariance: str = "square",
                 temperature: float = 0.1, axis: str = "dimensions") -> dict:
    """z_a, z_b [b d] on each process -> the three unweighted terms over the global batch. covariance: "square"
    (VICReg) or "lse" (VICReg-exp); axis "samples" applies the variance and covariance terms to the transposed
    global batch [d B] (VICReg-ctr: per-embedding spread and the Gram matrix of the B embeddings)."""
    z_a, z_b = gather(z_a), gather(z_b)
    inv = F.mse_loss(z_a, z_b)  # the same either way round
    if axis == "samples":
        z_a, z_b = z_a.T, z_b.T  # [d B]: the "dimensions" are now the samples
    cov = covariance_term if covariance == "square" else lambda z: lse_term(z, temperature)  # noqa: E731
    return {"inv": inv, "var": (variance_term(z_a, eps) + variance_term(z_b, eps)) / 2, "cov": cov(z_a) + cov(z_b)}


def vicreg_loss(z_a: torch.Tensor, z_b: torch.Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0, eps: float = 1e-4, **form) -> torch.Tensor:
    """z_a, z_b [b d] on each process; statistics over the global batch (paper coefficients 25/25/1); `form`:
    covariance=, temperature=, axis= of `vicreg_terms`."""
    t = vicreg_terms(z_a, z_b, eps, **form)
    return sim_coeff * t["inv"] + std_coeff * t["var"] + cov_coeff * t["cov"]


class VICReg(nn.Module):
    global_views = 2
    batch_statistics = True  # variance and covariance over the batch
    collapse_hint = "raise objective.std_coeff (the variance hinge keeps the dimensions apart)"

    def __init__(self, encoder, domain, projector=(256, 256), sim_coeff: float = 25.0, std_coeff: float = 25.0,
                 cov_coeff: float = 1.0, covariance: str = "square", temperature: float = 0.1,
                 axis: str = "dimensions"):
        super().__init__()
        if covariance not in ("square", "lse") or axis not in ("dimensions", "samples"):
            raise UserError(f"objective.covariance must be square or lse and objective.axis dimensions or samples, "
                            f"got {covariance!r} and {axis!r}")
        self.projector = mlp([encoder.dim, *projector])
        self.coeffs = {"inv": sim_coeff, "var": std_coeff, "cov": cov_coeff}
        self.form = {"covariance": covariance, "temperature": temperature, "axis": axis}

    def forward(self, encoder, batch, sched):
        reps = encode_views(encoder, batch["views"], batch.get("pad"))
        z = [self.projector(r) for r in reps]
        pairs = view_pairs(len(z))
        terms = [vicreg_terms(z[i], z[j], **self.form) for i, j in pairs]
        c = self.coeffs
        loss = sum(c["inv"] * t["inv"] + c["var"] * t["var"] + c["cov"] * t["cov"] for t in terms) / len(pairs)
        return loss, {"rep": reps[0].detach(), **{k: sum(t[k] for t in terms).detach() / len(pairs) for k in c}}
