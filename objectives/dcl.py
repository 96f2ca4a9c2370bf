"""DCL (Yeh et al. 2022): SimCLR's NT-Xent with the positive taken out of the denominator ("decoupled"), which
removes the coupling of the positive and negative gradients that makes NT-Xent need large batches; DCLW
also weights each positive by how hard it is (a negative von Mises-Fisher weight)."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import gather
from multissl.encoder import encode_views, view_pairs
from multissl.heads import mlp


def vmf_weights(z_a: torch.Tensor, z_b: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """z_a, z_b [n d] unit rows of the global batch -> w [n] = 2 - exp(<a_i, b_i>/sigma) / mean_k exp(<a_k, b_k>/sigma):
    positives less aligned than the batch's average weigh more. A weight, so no gradient through it."""
    s = (z_a * z_b).sum(1).detach() / sigma  # [n]
    return 2 - len(s) * torch.softmax(s, dim=0)


def dcl_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.1, weighted: bool = False,
             sigma: float = 0.5) -> torch.Tensor:
    """z_a, z_b [b d] on each process; every process's rows join the global batch (N rows per view). For each
    of the 2N anchors: -w <z_i, z_i'>/t + log sum over its 2N - 2 negatives (both views of every other sample)
    of exp(<z_i, z_k>/t), w = 1 (DCL) or vmf_weights (DCLW); the mean over the 2N anchors."""
    z = F.normalize(torch.cat([gather(z_a), gather(z_b)]), dim=1)  # [2n d]
    n = z.shape[0] // 2
    sim = z @ z.T / temperature  # [2n 2n]
    pair = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    positive = sim.gather(1, pair[:, None])[:, 0]  # [2n]
    if weighted:
        positive = positive * vmf_weights(z[:n], z[n:], sigma).repeat(2)
    # a sample's own two views are left out of its denominator: the decoupling
    own = torch.arange(2 * n, device=z.device) % n
    negatives = sim.masked_fill(own[:, None] == own[None, :], float("-inf"))
    return (torch.logsumexp(negatives, dim=1) - positive).mean()


class DCL(nn.Module):
    global_views = 2
    batch_statistics = True  # negatives come from the batch
    collapse_hint = "try objective.temperature between 0.1 and 0.5"

    def __init__(self, encoder, domain, projector=(256, 128), temperature: float = 0.1, weighted: bool = False,
                 sigma: float = 0.5):
        super().__init__()
        self.projector = mlp([encoder.dim, *projector])
        self.loss_kw = {"temperature": temperature, "weighted": weighted, "sigma": sigma}

    def forward(self, encoder, batch, sched):
        reps = encode_views(encoder, batch["views"], batch.get("pad"))  # n_views x [b d]
        z = [self.projector(r) for r in reps]
        pairs = view_pairs(len(z), self.global_views)
        loss = sum(dcl_loss(z[i], z[j], **self.loss_kw) for i, j in pairs) / len(pairs)
        with torch.no_grad():  # alignment of the positives, the term the negatives balance
            pos_cos = sum(F.cosine_similarity(z[i], z[j], dim=-1).mean() for i, j in pairs) / len(pairs)
        return loss, {"rep": reps[0].detach(), "pos_cos": pos_cos}
