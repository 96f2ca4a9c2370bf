"""SimCLR (Chen et al. 2020): NT-Xent between two views, negatives from the global batch; with the variants of
Garrido et al. 2023 as options: the negatives' similarities taken absolute or squared (`negatives`), and the
embeddings normalised per dimension instead of per sample (`normalize="dimensions"`: each dimension centred and
scaled to norm sqrt(N / d) over the N embeddings of a view, the normalisation of dimension-contrastive methods)."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import gather
from multissl.encoder import encode_views, view_pairs
from multissl.errors import UserError
from multissl.heads import mlp


def dimension_normalize(z: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """z [n d] with every dimension centred over the n rows and scaled to norm sqrt(n / d) (all rows then have unit
    norm on average, as after per-sample normalisation)."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    return z / z.norm(dim=0).clamp_min(eps) * (n / d) ** 0.5


def nt_xent_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.1, negatives: str = "cosine",
                 normalize: str = "embeddings") -> torch.Tensor:
    """z_a, z_b [b d] on each process. Each of the 2N (global) embeddings has its pair as positive and
    the other 2N - 2 as negatives; mean cross-entropy over all 2N. negatives: "cosine" (SimCLR), "abs" or
    "square": that function of the negatives' similarities (the positive's is kept as it is)."""
    if normalize == "embeddings":
        z = F.normalize(torch.cat([gather(z_a), gather(z_b)]), dim=1)  # [2n d]
    else:  # each view's global batch over its own dimensions
        z = torch.cat([dimension_normalize(gather(z_a)), dimension_normalize(gather(z_b))])
    n = z.shape[0] // 2
    sim = z @ z.T  # [2n 2n]
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    if negatives != "cosine":
        shaped = sim.abs() if negatives == "abs" else sim.pow(2)
        is_pos = F.one_hot(positive, 2 * n).bool()
        sim = torch.where(is_pos, sim, shaped)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf")) / temperature
    return F.cross_entropy(sim, positive)


class SimCLR(nn.Module):
    global_views = 2
    batch_statistics = True  # negatives come from the batch
    collapse_hint = "try objective.temperature between 0.1 and 0.5"

    def __init__(self, encoder, domain, projector=(256, 128), temperature: float = 0.1, negatives: str = "cosine",
                 normalize: str = "embeddings"):
        super().__init__()
        if negatives not in ("cosine", "abs", "square") or normalize not in ("embeddings", "dimensions"):
            raise UserError(f"objective.negatives must be cosine, abs or square and objective.normalize embeddings or "
                            f"dimensions, got {negatives!r} and {normalize!r}")
        self.projector = mlp([encoder.dim, *projector])
        self.temperature, self.form = temperature, {"negatives": negatives, "normalize": normalize}

    def forward(self, encoder, batch, sched):
        reps = encode_views(encoder, batch["views"], batch.get("pad"))  # n_views x [b d]
        z = [self.projector(r) for r in reps]
        pairs = view_pairs(len(z))
        loss = sum(nt_xent_loss(z[i], z[j], self.temperature, **self.form) for i, j in pairs) / len(pairs)
        with torch.no_grad():  # alignment of the positives, the term the negatives balance
            pos_cos = sum(F.cosine_similarity(z[i], z[j], dim=-1).mean() for i, j in pairs) / len(pairs)
        return loss, {"rep": reps[0].detach(), "pos_cos": pos_cos}
