"""SwAV (Caron et al. 2020): swapped prediction of cluster codes. Each global view's similarities to a set of
learnt prototypes are turned into soft codes by Sinkhorn-Knopp, which spreads the global batch evenly over the
prototypes (the equipartition is what rules out the trivial solution); every other view of the sample predicts
those codes from its own similarities. An optional queue of earlier steps' embeddings joins the transport problem
when the batch is small next to the number of prototypes."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import all_gather, all_reduce
from multissl.encoder import encode_views, view_pairs
from multissl.heads import mlp
from multissl.objectives import queue


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3,
             shared: torch.Tensor | None = None) -> torch.Tensor:
    """Codes [b K] for scores [b K] (this process's samples against K prototypes), from exp(scores / epsilon)
    scaled alternately so every prototype holds 1/K of the mass of the global batch (+ `shared`) and every sample
    1/B, `iterations` times; each returned row sums to 1. The prototype sums cover every process's samples (a plain
    all_reduce); `shared` [q K] are rows every process holds identically (a queue), counted once however many
    processes, and dropped from the output."""
    n_shared = 0 if shared is None else shared.shape[0]
    rows = scores if shared is None else torch.cat([shared, scores])  # [q+b K]
    # float64 (small: [b K]): exp(-2 / epsilon) of the farthest prototype stays above zero down to epsilon ~0.003
    rows = rows.to(torch.float32 if rows.device.type == "mps" else torch.float64)  # mps has no float64
    # a factor common to every process and row cancels in the first normalisation; the global maximum keeps
    # exp() from overflowing at small epsilon
    top = all_gather(scores.max().reshape(1).to(rows.dtype)).max()
    if n_shared:
        top = torch.maximum(top, shared.max().to(rows.dtype))
    q = torch.exp((rows - top) / epsilon)
    n_total = all_reduce(q.new_tensor(float(scores.shape[0]))) + n_shared  # B: samples in the problem
    k = q.shape[1]
    for _ in range(iterations):
        mass = all_reduce(q[n_shared:].sum(0)) + q[:n_shared].sum(0)  # [K] over the global batch (+ shared)
        q /= mass.clamp_min(torch.finfo(q.dtype).tiny) * k
        q /= q.sum(1, keepdim=True) * n_total
    return (q * n_total)[n_shared:].to(scores.dtype)


def swav_loss(scores: list[torch.Tensor], codes: list[torch.Tensor], temperature: float = 0.1) -> torch.Tensor:
    """scores: n_views x [b K] similarities to the prototypes (global views first); codes: n_global x [b K] targets
    (no gradient). Swapped prediction: the codes of view i against softmax(scores_j / temperature) for every view
    j != i, cross-entropy averaged over samples, then over pairs."""
    pairs = view_pairs(len(scores), len(codes))
    log_p = [F.log_softmax(s / temperature, dim=-1) for s in scores]
    return sum(-(codes[i].detach() * log_p[j]).sum(-1).mean() for i, j in pairs) / len(pairs)


class SwAV(nn.Module):
    global_views = 2
    local_views = 4  # the paper's 6 small crops cost the encoder little; see configs/objective/swav.yaml
    batch_statistics = True  # Sinkhorn spreads the global batch over the prototypes
    collapse_hint = ("lower objective.epsilon (e.g. 0.03: sharper codes), or set objective.queue_size when the batch "
                     "is small next to objective.prototypes")

    def __init__(self, encoder, domain, projector=(256, 128), prototypes: int = 128, temperature: float = 0.1,
                 epsilon: float = 0.02, sinkhorn_iterations: int = 3, freeze_prototypes: int = 6, queue_size=0,
                 queue_start: int = 30):
        super().__init__()
        self.projector = mlp([encoder.dim, *projector])
        self.prototypes = nn.Linear(projector[-1], prototypes, bias=False)
        self.normalize_prototypes()
        self.temperature, self.epsilon, self.iterations = temperature, epsilon, sinkhorn_iterations
        self.freeze_prototypes, self.queue_start = freeze_prototypes, queue_start
        self.queues = None  # one per global view, as the paper keeps one per view it assigns codes from
        if queue_size:
            n = queue.queue_size(int(queue_size), len(domain.dataset("train")))
            self.queues = nn.ModuleList(queue.Queue(n, projector[-1]) for _ in range(self.global_views))

    @torch.no_grad()
    def normalize_prototypes(self):
        w = self.prototypes.weight
        w.copy_(F.normalize(w, dim=1))

    def queued(self, step: int) -> list:
        """Per global view: scores [q K] of its queue against the current prototypes, once the queue is full (the
        paper's rule: random rows would take part in the transport), else None."""
        if self.queues is None or step < self.queue_start:
            return [None] * self.global_views
        return [self.prototypes(q.rows).detach() if int(q.filled) == len(q) else None for q in self.queues]

    def forward(self, encoder, batch, sched):
        step = sched["step"]
        # the paper renormalises the prototypes before every step and keeps them fixed at first (noisy early
        # codes); requires_grad off leaves their .grad None, so the optimizer skips them (no step, no weight decay)
        self.normalize_prototypes()
        self.prototypes.weight.requires_grad_(step >= self.freeze_prototypes)
        views = batch["views"]
        reps = encode_views(encoder, views, batch.get("pad"))  # n_views x [b d]
        # one projector pass over every view: its BatchNorm sees all crops together, as in the paper
        z = F.normalize(self.projector(torch.cat(reps)), dim=1).split([len(r) for r in reps])
        scores = [self.prototypes(e) for e in z]  # n_views x [b K], cosine similarities
        g = min(self.global_views, len(views))
        with torch.no_grad():
            shared = self.queued(step)
            codes = [sinkhorn(scores[i].detach(), self.epsilon, self.iterations, shared[i]) for i in range(g)]
        loss = swav_loss(scores, codes, self.temperature)
        if self.queues is not None and step >= self.queue_start:
            for q, e in zip(self.queues, z[:g]):
                q.stash(step, e)
        return loss, {"rep": reps[0].detach(), **self.assignment_logs(scores[:g], codes)}

    @torch.no_grad()
    def branches(self, encoder, batch):
        """online: the predicted assignment softmax(scores / temperature); target: the Sinkhorn codes of the
        evaluation batch (no queue)."""
        z = F.normalize(self.projector(encode_views(encoder, batch["views"][:1], batch.get("pad"))[0]), dim=1)
        scores = F.linear(z, F.normalize(self.prototypes.weight, dim=1))  # [b K]; the prototypes left as they are
        return F.softmax(scores / self.temperature, dim=-1), sinkhorn(scores, self.epsilon, self.iterations)

    @torch.no_grad()
    def assignment_logs(self, scores: list, codes: list) -> dict:
        """assignment_entropy: mean entropy (nats) of a sample's code (log K: the scores tell samples apart no more);
        prototypes_used: prototypes that are the nearest one of some sample of the global batch."""
        entropy = sum(-torch.special.xlogy(c, c).sum(-1).mean() for c in codes) / len(codes)
        k = scores[0].shape[1]
        hits = sum(torch.bincount(s.argmax(1), minlength=k) for s in scores)  # [K]
        used = (all_reduce(hits) > 0).sum()
        return {"assignment_entropy": entropy, "prototypes_used": used}

    @torch.no_grad()
    def after_step(self, encoder, sched):
        if self.queues is not None:
            for q in self.queues:
                q.commit(sched["step"])
