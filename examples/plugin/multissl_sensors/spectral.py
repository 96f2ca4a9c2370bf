"""Spectral contrastive loss (HaoChen et al. 2021): -2 E[f(x)^T f(x+)] + E[(f(x)^T f(x-))^2], a contrastive loss
whose minimiser is a spectral decomposition of the augmentation graph; no temperature, no softmax."""
import torch
from torch import nn

from multissl.dist import gather
from multissl.encoder import encode_views, view_pairs
from multissl.heads import mlp


def clip_norm(z: torch.Tensor, mu: float) -> torch.Tensor:
    """Rows of z [n d] longer than sqrt(mu) scaled back to norm sqrt(mu); shorter ones kept (the paper's code)."""
    return z * (mu ** 0.5 / z.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)


def spectral_terms(z_a: torch.Tensor, z_b: torch.Tensor, mu: float = 1.0) -> dict:
    """z_a, z_b [b d] on each process (row i of both: two views of sample i) -> the loss's two terms over the global
    batch of N rows, each divided by mu: "pos", -2 times the mean positive product, and "neg", the mean squared
    product of the N (N - 1) pairs of views of different samples."""
    z_a, z_b = clip_norm(gather(z_a), mu), clip_norm(gather(z_b), mu)
    n = z_a.shape[0]
    pos = -2 * (z_a * z_b).sum(1).mean()
    sq = (z_a @ z_b.T).pow(2)  # [N N]
    neg = (sq.sum() - sq.diagonal().sum()) / (n * (n - 1))
    return {"pos": pos / mu, "neg": neg / mu}


def spectral_contrastive_loss(z_a: torch.Tensor, z_b: torch.Tensor, mu: float = 1.0) -> torch.Tensor:
    """z_a, z_b [b d] on each process -> the loss over the global batch. Rows capped at norm sqrt(mu) are sqrt(mu) u
    with |u| <= 1, so the loss is -2 E[u^T u+] + mu E[(u^T u-)^2]: mu weighs the negative term (the paper's: 1)."""
    t = spectral_terms(z_a, z_b, mu)
    return t["pos"] + t["neg"]


class SpectralContrastive(nn.Module):
    """Two views through a projector (the width of multissl's other objectives'), the loss averaged over the view
    pairs; logs the positive term "pos" and the negative term "neg"."""
    global_views = 2
    batch_statistics = True  # the negative term compares every pair of samples of the global batch
    collapse_hint = "raise objective.mu (it weighs the negative term that keeps samples apart)"

    def __init__(self, encoder, domain, projector=(256, 128), mu: float = 1.0):
        super().__init__()
        self.projector = mlp([encoder.dim, *projector])
        self.mu = mu

    def forward(self, encoder, batch, sched):
        reps = encode_views(encoder, batch["views"], batch.get("pad"))  # n_views x [b d]
        z = [self.projector(r) for r in reps]
        pairs = view_pairs(len(z))
        terms = [spectral_terms(z[i], z[j], self.mu) for i, j in pairs]
        loss = sum(t["pos"] + t["neg"] for t in terms) / len(pairs)
        logs = {k: sum(t[k] for t in terms).detach() / len(pairs) for k in ("pos", "neg")}
        return loss, {"rep": reps[0].detach(), **logs}
