"""NNCLR (Dwibedi et al. 2021): the positive of a view is the nearest neighbour of its projection in a support set
of earlier steps' projections, contrasted with the other view's prediction; negatives from the global batch."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import all_gather, all_reduce, gather, local_slice
from multissl.encoder import encode_views, view_pairs
from multissl.errors import UserError
from multissl.heads import mlp
from multissl.objectives.queue import Queue, queue_size as support_size


@torch.no_grad()
def nearest_neighbour(z: torch.Tensor, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z [b d], support [q d] (unit rows) -> (index [b], row [b d]) of each z's most cosine-similar support row.
    No gradient: the neighbour is a target, and argmax has none to give."""
    idx = (F.normalize(z, dim=1) @ support.to(z.dtype).T).argmax(1)  # [b]
    return idx, support[idx].to(z.dtype)


def nnclr_loss(nn_a: torch.Tensor, p_b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """nn_a [b d]: the support-set neighbours of view a's projections (no gradient); p_b [b d]: view b's
    predictions of the same samples, on each process. InfoNCE over the global batch with the paper's
    symmetrisation: each neighbour picks its sample's prediction among all predictions, and each prediction
    picks its sample's neighbour among all neighbours; the mean of the two cross-entropies."""
    nn_all = F.normalize(all_gather(nn_a), dim=1)  # [B d]
    p_all = F.normalize(gather(p_b), dim=1)  # [B d], gradient returns to the process that owns the row
    rows = local_slice(p_all.shape[0])
    target = torch.arange(rows.start, rows.stop, device=p_b.device)
    to_p = nn_all[rows] @ p_all.T / temperature  # [b B]
    to_nn = p_all[rows] @ nn_all.T / temperature  # [b B]
    return (F.cross_entropy(to_p, target) + F.cross_entropy(to_nn, target)) / 2


def nn_hits(y: torch.Tensor, y_nn: torch.Tensor) -> torch.Tensor:
    """Labels of anchors y [b] and of their neighbours y_nn [b] (-1 = unknown) -> [2]: (anchors whose neighbour
    has their label, anchors where both labels are known)."""
    known = (y >= 0) & (y_nn >= 0)
    return torch.stack([(known & (y == y_nn)).sum(), known.sum()])


class NNCLR(nn.Module):
    global_views = 2
    batch_statistics = True  # negatives come from the batch
    collapse_hint = ("try objective.temperature between 0.1 and 0.3, or a smaller objective.queue_size "
                     "(fresher neighbours)")

    def __init__(self, encoder, domain, projector=(256, 256, 128), predictor=(512, 128), temperature: float = 0.1,
                 queue_size: int | None = None):
        super().__init__()
        dim = projector[-1]
        if predictor[-1] != dim:
            raise UserError(f"objective.predictor must end at the projector's width {dim}, got {predictor[-1]}")
        # the paper's BatchNorm on the output, without affine: its shift would get no gradient through the
        # predictor's BatchNorm, its scale only repeats the predictor's Linear
        self.projector = mlp([encoder.dim, *projector], last_bn=True)
        self.predictor = mlp([dim, *predictor])
        self.temperature = temperature
        size = support_size(queue_size, len(domain.dataset("train")), default=98304)
        self.queue = Queue(size, dim)  # the support set: view 0's unit projections and labels

    def forward(self, encoder, batch, sched):
        reps = encode_views(encoder, batch["views"], batch.get("pad"))  # n_views x [b d]
        z = [self.projector(r) for r in reps]
        p = [self.predictor(x) for x in z]
        g = min(self.global_views, len(z))
        found = [nearest_neighbour(x, self.queue.rows) for x in z[:g]]  # the positives come from globals
        pairs = view_pairs(len(z), g)
        loss = sum(nnclr_loss(found[i][1], p[j], self.temperature) for i, j in pairs) / len(pairs)
        y = batch.get("y")
        if y is None:
            y = torch.full(reps[0].shape[:1], -1, dtype=torch.long, device=reps[0].device)
        self.queue.stash(sched["step"], F.normalize(z[0].detach(), dim=1), y)
        with torch.no_grad():
            # pos_cos: does the prediction agree with its positive; nn_cos: how near that neighbour is
            pos_cos = sum(F.cosine_similarity(found[i][1], p[j], dim=-1).mean() for i, j in pairs) / len(pairs)
            nn_cos = sum(F.cosine_similarity(z[i], found[i][1], dim=-1).mean() for i in range(g)) / g
            logs = {"rep": reps[0].detach(), "pos_cos": pos_cos, "nn_cos": nn_cos,
                    "queue_fill": self.queue.filled.float() / len(self.queue)}
            # over the global batch, so every process logs the same value (or none)
            hits = all_reduce(sum(nn_hits(y, self.queue.labels[idx]) for idx, _ in found))
            if hits[1] > 0:
                logs["nn_acc"] = hits[0].float() / hits[1]
        return loss, logs

    def after_step(self, encoder, sched):
        self.queue.commit(sched["step"])
