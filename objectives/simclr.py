"""SimCLR (Chen et al. 2020): NT-Xent between two views, negatives from the global batch."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import gather
from multissl.encoder import encode_views, view_pairs
from multissl.heads import mlp


def nt_xent_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """z_a, z_b [b d] on each process. Each of the 2N (global) embeddings has its pair as positive and
    the other 2N - 2 as negatives; mean cross-entropy over all 2N."""
    z = F.normalize(torch.cat([gather(z_a), gather(z_b)]), dim=1)  # [2n d]
    n = z.shape[0] // 2
    sim = z @ z.T / temperature  # [2n 2n]
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, positive)


class SimCLR(nn.Module):
    global_views = 2
    batch_statistics = True  # negatives come from the batch
    collapse_hint = "try objective.temperature between 0.1 and 0.5"

    def __init__(self, encoder, domain, projector=(256, 128), temperature: float = 0.1):
        super().__init__()
        self.projector = mlp([encoder.dim, *projector])
        self.temperature = temperature

    def forward(self, encoder, batch, sched):
        reps = encode_views(encoder, batch["views"], batch.get("pad"))  # n_views x [b d]
        z = [self.projector(r) for r in reps]
        pairs = view_pairs(len(z))
        loss = sum(nt_xent_loss(z[i], z[j], self.temperature) for i, j in pairs) / len(pairs)
        with torch.no_grad():  # alignment of the positives, the term the negatives balance
            pos_cos = sum(F.cosine_similarity(z[i], z[j], dim=-1).mean() for i, j in pairs) / len(pairs)
        return loss, {"rep": reps[0].detach(), "pos_cos": pos_cos}
