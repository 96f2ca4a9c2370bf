"""MoCo v3 (Chen, Xie & He 2021): the online encoder + projector + predictor's queries against the keys of a
momentum (EMA) copy of encoder + projector; InfoNCE over the global batch of keys, no queue."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import all_gather, local_slice
from multissl.ema import EMATeacher, predictor_vs_teacher
from multissl.encoder import encode_views, view_pairs
from multissl.heads import mlp


def moco_v3_loss(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """q [b d] this process's queries, k [b d] its keys (no gradient: they come from the momentum encoder).
    Each query against every process's keys, its own key the positive; cross-entropy times 2 t (the paper's
    scaling: the gradient's size then depends less on t)."""
    q = F.normalize(q, dim=1)
    keys = F.normalize(all_gather(k), dim=1)  # [B d], rank order
    logits = q @ keys.T / temperature  # [b B]
    own = torch.arange(q.shape[0], device=q.device) + local_slice(keys.shape[0]).start  # this process's rows
    return F.cross_entropy(logits, own) * 2 * temperature


class MoCoV3(nn.Module):
    global_views = 2
    batch_statistics = True  # the other samples' keys are the negatives
    collapse_hint = "try objective.temperature between 0.1 and 0.5, or a slower teacher (ema.start=0.99)"

    def __init__(self, encoder, domain, projector=(256, 256, 128), predictor=(256, 128), temperature: float = 0.2):
        super().__init__()
        if predictor[-1] != projector[-1]:
            raise ValueError(f"objective.predictor must end at the projector's width {projector[-1]}, "
                             f"got {list(predictor)}")
        # the paper's heads: BN on the projector's output (no affine), none on the predictor's; no biases
        self.projector = mlp([encoder.dim, *projector], last_bn=True)
        self.predictor = mlp([projector[-1], *predictor], last_bias=False)
        self.teacher = EMATeacher(encoder, self.projector)  # the momentum encoder: no predictor
        self.temperature = temperature

    def forward(self, encoder, batch, sched):
        views, pads = batch["views"], batch.get("pad")
        reps = encode_views(encoder, views, pads)  # n_views x [b d]
        q = [self.predictor(self.projector(r)) for r in reps]
        g = self.global_views
        with torch.no_grad():
            t_enc, t_proj = self.teacher.nets
            k = [t_proj(r) for r in encode_views(t_enc, views[:g], pads[:g] if pads else None)]
        pairs = view_pairs(len(views), g)
        # ctr(q1, k2) + ctr(q2, k1) of the paper; multi-crop: every view's queries against each global view's keys
        loss = 2 * sum(moco_v3_loss(q[j], k[i], self.temperature) for i, j in pairs) / len(pairs)
        with torch.no_grad():
            pos_cos = sum(F.cosine_similarity(q[j], k[i], dim=-1).mean() for i, j in pairs) / len(pairs)
            acc = sum(self.key_accuracy(q[j], k[i]) for i, j in pairs) / len(pairs)
        return loss, {"rep": reps[0].detach(), "pos_cos": pos_cos, "acc": acc}

    @staticmethod
    def key_accuracy(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Share of queries whose most similar key in the global batch is their own."""
        keys = F.normalize(all_gather(k), dim=1)
        own = torch.arange(q.shape[0], device=q.device) + local_slice(keys.shape[0]).start
        return (F.normalize(q, dim=1) @ keys.T).argmax(1).eq(own).float().mean()

    def branches(self, encoder, batch):
        """online: the queries (predictor's output); target: the momentum encoder's keys."""
        return predictor_vs_teacher(encoder, batch, lambda r: self.predictor(self.projector(r)), self.teacher)

    def after_step(self, encoder, sched):
        self.teacher.update([encoder, self.projector], sched["ema"])
