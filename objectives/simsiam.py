"""SimSiam (Chen & He 2021): a predictor regresses the other view's projection under a stop-gradient; no
teacher, no negatives. The stop-gradient and the predictor are what keep it from collapsing."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import all_gather
from multissl.encoder import encode_views, view_pairs
from multissl.heads import mlp
from multissl.optim import scale_lr


def simsiam_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """p, z [b d]: D(p, sg(z)) = mean negative cosine; -1 when aligned. z gets no gradient."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


@torch.no_grad()
def normalized_std(z: torch.Tensor) -> torch.Tensor:
    """The paper's collapse monitor: per-dimension std of the l2-normalised rows z [b d] over the global batch,
    averaged over dimensions; about 1/sqrt(d) when the outputs spread over the sphere, 0 when collapsed."""
    return all_gather(F.normalize(z.float(), dim=1)).std(dim=0).mean()


class SimSiam(nn.Module):
    global_views = 2
    collapse_hint = "raise objective.predictor_lr (the predictor must keep up with the encoder)"

    def __init__(self, encoder, domain, projector=(256, 256, 256), predictor=(64, 256), predictor_lr: float = 30.0):
        super().__init__()
        if predictor[-1] != projector[-1]:
            raise ValueError(f"objective.predictor must end at the projector's width {projector[-1]}, "
                             f"got {list(predictor)}")
        # BN on every layer, the output's too (the paper's projector)
        self.projector = mlp([encoder.dim, *projector], last_bn=True)
        self.predictor = mlp([projector[-1], *predictor])  # bottleneck: Linear-BN-ReLU, then a plain Linear
        scale_lr(self.predictor, predictor_lr)

    def forward(self, encoder, batch, sched):
        reps = encode_views(encoder, batch["views"], batch.get("pad"))  # n_views x [b d]
        z = [self.projector(r) for r in reps]
        p = [self.predictor(x) for x in z]
        pairs = view_pairs(len(z), self.global_views)
        # D(p_j, sg(z_i)) over every (global i, other j); with two views the paper's symmetric half-sum
        terms = [simsiam_loss(p[j], z[i]) for i, j in pairs]
        loss = sum(terms) / len(pairs)
        return loss, {"rep": reps[0].detach(), "cos": -loss.detach(), "std": normalized_std(z[0])}

    @torch.no_grad()
    def branches(self, encoder, batch):
        """online: the predictor's output; target: the projection it is pulled to (the stop-gradient side), both unit
        length."""
        z = self.projector(encode_views(encoder, batch["views"][:1], batch.get("pad"))[0])
        return F.normalize(self.predictor(z), dim=1), F.normalize(z, dim=1)
