"""BYOL (Grill et al. 2020): an online predictor regresses an EMA teacher's projection of the other view."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.ema import EMATeacher, predictor_vs_teacher
from multissl.encoder import encode_views, view_pairs
from multissl.heads import mlp
from multissl.optim import scale_lr


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """p, z [b d]: mean of 2 - 2 cos(p, z); 0 when aligned, 4 when opposite. z gets no gradient."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


class BYOL(nn.Module):
    global_views = 2
    collapse_hint = "raise objective.predictor_lr (the predictor must outpace the EMA teacher)"

    def __init__(self, encoder, domain, projector=(256, 128), predictor=(256, 128), predictor_lr: float = 30.0):
        super().__init__()
        self.projector = mlp([encoder.dim, *projector])
        self.predictor = mlp([projector[-1], *predictor])
        self.teacher = EMATeacher(encoder, self.projector)
        scale_lr(self.predictor, predictor_lr)

    def forward(self, encoder, batch, sched):
        views, pads = batch["views"], batch.get("pad")
        reps = encode_views(encoder, views, pads)
        p = [self.predictor(self.projector(r)) for r in reps]
        with torch.no_grad():
            t_enc, t_proj = self.teacher.nets
            g = self.global_views
            t = [t_proj(r) for r in encode_views(t_enc, views[:g], pads[:g] if pads else None)]
        pairs = view_pairs(len(views), self.global_views)
        # symmetric loss of the paper (sum over both directions), averaged over multi-crop pairs
        terms = [byol_loss(p[j], t[i]) for i, j in pairs]
        loss = 2 * sum(terms) / len(pairs)
        cos = 1 - sum(terms).detach() / (2 * len(pairs))  # mean cos(prediction, target)
        return loss, {"rep": reps[0].detach(), "cos": cos}

    def branches(self, encoder, batch):
        """online: the predictor's output; target: the teacher's projection."""
        return predictor_vs_teacher(encoder, batch, lambda r: self.predictor(self.projector(r)), self.teacher)

    def after_step(self, encoder, sched):
        self.teacher.update([encoder, self.projector], sched["ema"])
