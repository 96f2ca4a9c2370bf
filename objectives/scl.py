"""Spectral contrastive loss (HaoChen et al. 2021, "Provable guarantees for self-supervised deep learning with
spectral contrastive loss"): -2 E[f(x)^T f(x+)] + E[(f(x)^T f(x-))^2], the positives two views of one sample, the
negatives two views of different samples.

As the official code (github.com/jhaochenz/spectral_contrastive_learning, models/spectral.py and its backbones):
- every embedding whose norm reaches sqrt(mu) is scaled back to norm sqrt(mu) (shorter ones are left alone), and
  the loss is divided by mu (its CIFAR recipe mu = 1, ImageNet mu = 10);
- the negative term averages over the B (B - 1) off-diagonal pairs of the global batch (the code's mean over the
  B x B matrix with the diagonal zeroed, times B / (B - 1));
- the projector is Linear-BN-ReLU then Linear-BN, the last BatchNorm with its affine scale and shift and no ReLU
  (its "mlp..._norelu" backbones: 2048 hidden, 1000 out on CIFAR's ResNet-18).
Only the statistics differ in scope: here over the batch gathered from every process."""
import math

import torch
from torch import nn

from multissl.dist import gather
from multissl.encoder import encode_views, view_pairs
from multissl.heads import mlp


def clip_norm(z: torch.Tensor, mu: float = 1.0) -> torch.Tensor:
    """z [n d] -> each row whose norm is at least sqrt(mu) rescaled to norm sqrt(mu); shorter rows unchanged."""
    norm = z.norm(dim=1, keepdim=True)  # [n 1]
    bound = math.sqrt(mu)
    return torch.where(norm < bound, z, z / norm.clamp_min(1e-12) * bound)


def scl_terms(z_a: torch.Tensor, z_b: torch.Tensor, mu: float = 1.0) -> dict:
    """z_a, z_b [b d] on each process -> {"pos": -2 mean_i a_i.b_i / mu, "neg": mean_{i != j} (a_i.b_j)^2 / mu}
    over the global batch, after `clip_norm`."""
    a, b = clip_norm(gather(z_a), mu), clip_norm(gather(z_b), mu)  # [B d]
    n = a.shape[0]
    pos = -2 * (a * b).sum(dim=1).mean()
    sq = (a @ b.T).pow(2)  # [B B]
    neg = (sq.sum() - sq.diagonal().sum()) / (n * (n - 1))
    return {"pos": pos / mu, "neg": neg / mu}


def scl_loss(z_a: torch.Tensor, z_b: torch.Tensor, mu: float = 1.0) -> torch.Tensor:
    """z_a, z_b [b d] on each process: the spectral contrastive loss over the global batch (symmetric in a, b)."""
    t = scl_terms(z_a, z_b, mu)
    return t["pos"] + t["neg"]


class SCL(nn.Module):
    global_views = 2
    batch_statistics = True  # the negatives are the batch's other samples
    collapse_hint = ("widen the last of objective.projector (the loss spreads the embeddings over at most that many "
                     "directions) or try objective.mu 10 (the official ImageNet bound)")

    def __init__(self, encoder, domain, projector=(256, 128), mu: float = 1.0):
        super().__init__()
        # the official last BatchNorm keeps its affine scale and shift: the loss is not scale invariant below the
        # norm bound, so they are trained; the Linear before it drops its bias, which that BatchNorm cancels
        self.projector = nn.Sequential(*mlp([encoder.dim, *projector], last_bias=False), nn.BatchNorm1d(projector[-1]))
        self.mu = mu

    def forward(self, encoder, batch, sched):
        reps = encode_views(encoder, batch["views"], batch.get("pad"))  # n_views x [b d]
        z = [self.projector(r) for r in reps]
        # the loss is symmetric: each unordered pair once (with two views, the official loss itself)
        pairs = [(i, j) for i, j in view_pairs(len(z), self.global_views) if i < j]
        terms = [scl_terms(z[i], z[j], self.mu) for i, j in pairs]
        loss = sum(t["pos"] + t["neg"] for t in terms) / len(pairs)
        logs = {k: sum(t[k] for t in terms).detach() / len(pairs) for k in ("pos", "neg")}
        return loss, {"rep": reps[0].detach(), **logs}
