"""Mean Shift (Koohpayegani, Tejankar & Pirsiavash 2021, "Mean Shift for Self-Supervised Learning"): an online
prediction of one view is pulled toward the k nearest neighbours, in a memory bank of earlier targets, of an EMA
teacher's embedding of the other view. The neighbours are chosen by the target alone, so the online branch learns to
shift each sample toward the mode of its neighbourhood; k=1 is BYOL (the target is its own nearest neighbour).

Follows the official code (github.com/UMBCvision/MSF, train_msf.py): one direction only (query = view 0 through the
online encoder, projector and predictor; target = view 1 through the teacher), unit targets enqueued before the
lookup so that the target joins the candidates, neighbours by the squared distance 2 - 2 t.b of unit rows, and the
loss as the mean over the k neighbours of 2 - 2 q.b. Left out, as byol here does: ShuffleBN (every BatchNorm here
sees the global batch) and the official weak (target) / strong (query) augmentations (both views come from the
domain's one recipe)."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import all_gather, all_reduce
from multissl.ema import EMATeacher, predictor_vs_teacher, teacher_momentum
from multissl.encoder import encode_views
from multissl.errors import UserError
from multissl.heads import mlp
from multissl.objectives.queue import Queue, queue_size as bank_length
from multissl.optim import scale_lr


def meanshift_loss(query: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """query [b e], neighbours [b k e] (no gradient): the mean over rows and neighbours of the squared distance of
    the unit vectors, 2 - 2 cos(query, neighbour); 0 when every neighbour points along its query, 4 when opposite."""
    q = F.normalize(query, dim=-1)
    nb = F.normalize(neighbours.detach(), dim=-1)
    return (2 - 2 * torch.einsum("be,bke->bk", q, nb)).mean()


@torch.no_grad()
def nearest_neighbours(target: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """target [b e], bank [q e] unit rows -> indices [b k] of the k bank rows nearest to each unit target, nearest
    first (the official distance 2 - 2 t.b, the squared Euclidean distance of unit vectors)."""
    dist = 2 - 2 * F.normalize(target, dim=1) @ bank.to(target.dtype).T  # [b q]
    return dist.topk(k, dim=1, largest=False).indices


@torch.no_grad()
def bank_after(rows: torch.Tensor, ptr: int | torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """A ring buffer rows [q ...] whose oldest slot is ptr, with new [n ...] written from there (the last q of them
    when n > q): what the bank holds once this step's targets are enqueued — the official lookup's candidates."""
    new = new[-len(rows):].to(rows.dtype)
    out = rows.clone()
    out[(ptr + torch.arange(len(new), device=rows.device)) % len(rows)] = new
    return out


class MeanShift(nn.Module):
    global_views = 2
    collapse_hint = ("try a larger objective.predictor_lr (the predictor must outpace the teacher), a slower "
                     "teacher (objective.momentum=0.99), or a smaller objective.topk (topk=1 is byol)")

    def __init__(self, encoder, domain, projector=(256, 128), predictor=(256, 128), topk: int = 5,
                 bank_size: int | None = None, momentum: float | None = None, predictor_lr: float = 30.0):
        """projector, predictor: byol's widths for the 64-dim default encoder (the official ResNet-50 heads are
        [4096, 512], hidden twice the encoder width and out a quarter: 16 dims here, too narrow a bank).
        bank_size None: the smaller of the official 128000 and half the training set. momentum None: the engine's
        ema schedule, as byol; a number: cosine from it to 1 (the official code holds 0.99 constant).
        predictor_lr: the predictor's lr over the scheduled one (the official code: 1; byol's 30 here, as at 1 the
        representation collapsed on spoken words in a few hundred steps)."""
        super().__init__()
        dim = projector[-1]
        if predictor[-1] != dim:
            raise UserError(f"objective.predictor must end at the projector's width {dim}, got {predictor[-1]}")
        self.projector = mlp([encoder.dim, *projector])
        self.predictor = mlp([dim, *predictor])
        self.teacher = EMATeacher(encoder, self.projector)
        scale_lr(self.predictor, predictor_lr)
        self.momentum = momentum
        size = bank_length(bank_size, len(domain.dataset("train")), key="objective.bank_size", default=128000)
        if not 1 <= topk <= size:
            raise UserError(f"objective.topk={topk} must be between 1 and the bank's {size} rows "
                            f"(objective.bank_size)")
        self.topk = int(topk)
        self.bank = Queue(size, dim)  # the teacher's unit embeddings of view 1, and their labels

    def forward(self, encoder, batch, sched):
        views, pads = batch["views"], batch.get("pad")
        rep = encode_views(encoder, views[:1], pads[:1] if pads else None)[0]  # [b d]
        query = self.predictor(self.projector(rep))  # [b e]
        y = batch.get("y")
        if y is None:
            y = torch.full(rep.shape[:1], -1, dtype=torch.long, device=rep.device)
        with torch.no_grad():
            target = F.normalize(self.teacher.embed(views[1], pads[1] if pads else None), dim=1)  # [b e]
            # the bank with the global batch's targets enqueued, on every process alike (each micro-batch of an
            # accumulated step sees its own written at the pointer); after_step commits the same rows
            ptr = self.bank.ptr  # read as a tensor: no device sync
            cand = bank_after(self.bank.rows, ptr, all_gather(target))  # [q e]
            cand_y = bank_after(self.bank.labels, ptr, all_gather(y))  # [q]
            idx = nearest_neighbours(target, cand, self.topk)  # [b k]
            neighbours = cand[idx].to(query.dtype)  # [b k e]
        self.bank.stash(sched["step"], target, y)
        loss = meanshift_loss(query, neighbours)
        with torch.no_grad():
            # target_cos: the byol term (k=1); nn_cos: how close the target's neighbourhood is around it
            q = F.normalize(query.detach(), dim=1)
            logs = {"rep": rep.detach(), "cos": 1 - loss.detach() / 2,
                    "target_cos": (q * target.to(q.dtype)).sum(1).mean(),
                    "nn_cos": torch.einsum("be,bke->bk", target, neighbours.to(target.dtype)).mean(),
                    "bank_fill": self.bank.filled.float() / len(self.bank)}
            # purity as the official code counts it (the target is among its neighbours), over the pairs whose
            # labels are both known and the global batch, so every process logs the same value (or none)
            y_nn, y_k = cand_y[idx], y[:, None].expand_as(idx)  # [b k]
            known = (y_k >= 0) & (y_nn >= 0)
            hits = all_reduce(torch.stack([(known & (y_k == y_nn)).sum(), known.sum()]))
            if hits[1] > 0:
                logs["purity"] = hits[0].float() / hits[1]
        return loss, logs

    def branches(self, encoder, batch):
        """online: the predictor's output; target: the teacher's projection."""
        return predictor_vs_teacher(encoder, batch, lambda r: self.predictor(self.projector(r)), self.teacher)

    def after_step(self, encoder, sched):
        self.teacher.update([encoder, self.projector], teacher_momentum(self.momentum, sched))
        self.bank.commit(sched["step"])
