"""MSN (Assran et al. 2022, Masked Siamese Networks): an anchor view with some of its tokens dropped must give the
same soft assignment to a set of learnt prototypes as an EMA target encoder gives the whole (unmasked) target view.

Anchor: view 0 with the domain's mask applied by dropping the tokens it masks (`keep`), at most `mask_ratio` of them
(the paper's ViT-S/16 drops 0.3 of the patches; where the domain's mask hides more, MAE's 0.75, a random part of it
stays visible: the masked anchor could not predict its target otherwise); a domain that masks by replacing values (text, tables in VIME mode) gives view 0 corrupted at
the masked positions instead, with every token kept. The local ("focal") views are anchors too, unmasked, as in the
paper (10 there, 4 here: `local_views`; a domain without local views gives none). Target: view 1 through the EMA
encoder and projection head. Both sides are cosine similarities to the same l2-normalised prototypes (no gradient on
the target side); the target is sharpened (a lower temperature) and balanced over the global batch by Sinkhorn, as
the official code does; mean-entropy maximisation (me-max) of the anchors' mean prediction over the global batch is
what keeps every sample from choosing one prototype."""
import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from multissl.contracts import Masked
from multissl.dist import all_reduce, gather
from multissl.ema import EMATeacher, teacher_momentum
from multissl.encoder import encode_views


@torch.no_grad()
def sinkhorn_probs(p: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """p [b K] probabilities of this process's samples -> [b K], each row summing to 1, after `iterations` rounds of
    scaling every prototype's column to the same mass over the global batch, then every sample's row to 1 (the
    official distributed_sinkhorn on probabilities; its 1/K and 1/B factors cancel in the row scaling). 0: p as is."""
    q = p.to(torch.float32 if p.device.type == "mps" else torch.float64)  # mps has no float64
    for _ in range(iterations):
        q = q / all_reduce(q.sum(0)).clamp_min(torch.finfo(q.dtype).tiny)  # [K] summed over every process
        q = q / q.sum(1, keepdim=True)
    return q.to(p.dtype)


def msn_targets(target: torch.Tensor, target_temperature: float = 0.025, iterations: int = 3) -> torch.Tensor:
    """target [b K] cosine similarities of the target view to the prototypes -> the sharpened, balanced targets
    [b K] (no gradient). softmax(s / target_temperature) is the paper's sharpening of softmax(s / temperature) with
    exponent 1 / T: temperature * T = 0.1 * 0.25 = 0.025."""
    s = target.detach().to(torch.float32 if target.device.type == "mps" else torch.float64)
    return sinkhorn_probs(F.softmax(s / target_temperature, dim=-1), iterations)


def msn_loss(anchor: list[torch.Tensor], target: torch.Tensor, temperature: float = 0.1,
             target_temperature: float = 0.025, sinkhorn_iterations: int = 3,
             me_max_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """anchor: n_anchor x [b K] cosine similarities of the anchor views (the masked view first, then the local ones)
    to the K prototypes; target [b K] those of the target view (no gradient). -> (loss, terms):
    ce = H(targets, softmax(anchor / temperature)), the mean over every anchor row, each view of a sample matched to
    its one target; me_max = log K - H(mean over the global batch's anchor rows of their predictions), 0 when the
    mean prediction is uniform and log K when every row predicts one prototype; loss = ce + me_max_weight * me_max.
    target_entropy: mean entropy (nats) of the targets (log K: uniform, 0: one-hot)."""
    dtype = torch.promote_types(anchor[0].dtype, torch.float32)  # log-probabilities in float32 at least
    t = msn_targets(target, target_temperature, sinkhorn_iterations).to(dtype)  # [b K]
    log_p = [F.log_softmax(a.to(dtype) / temperature, dim=-1) for a in anchor]  # n_anchor x [b K]
    ce = sum(-(t * lp).sum(-1).mean() for lp in log_p) / len(log_p)
    # every process holds as many rows: the mean of the per-process means is the global mean
    mean_p = gather(torch.cat(log_p).exp().mean(0, keepdim=True)).mean(0)  # [K]
    me_max = (mean_p * mean_p.log()).sum() + math.log(mean_p.shape[0])
    entropy = -torch.special.xlogy(t, t).sum(-1).mean().detach()
    return ce + me_max_weight * me_max, {"ce": ce.detach(), "me_max": me_max.detach(), "target_entropy": entropy}


def msn_projector(in_dim: int, widths=(256, 256, 64)) -> nn.Sequential:
    """The paper's head: Linear-BatchNorm-GELU blocks, then a Linear (trunc-normal weights, std 0.02). The Linears
    before a BatchNorm have no bias: it would cancel it (the official head's are trained to no effect)."""
    dims, layers = [in_dim, *widths], []
    for d_in, d_out in pairwise(dims[:-1]):
        layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out), nn.GELU()]
    layers.append(nn.Linear(dims[-2], dims[-1]))
    for m in layers:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


class MSN(nn.Module):
    global_views = 2  # view 0: the masked anchor; view 1: the target
    local_views = 4  # the paper's 10 focal views cost the encoder ten more passes; 4 suit a CPU
    needs = (Masked,)  # the domain's masks
    needs_token_encoder = True  # the anchor's encoder sees the kept tokens only
    corrupt_view = True  # a domain that replaces masked values (text, VIME) corrupts view 0 instead
    batch_statistics = True  # Sinkhorn and me-max span the global batch
    collapse_hint = ("read msn/me_max and msn/target_entropy: me_max near log(prototypes) means every sample picks "
                     "one prototype, raise objective.me_max_weight or objective.sinkhorn_iterations; target_entropy "
                     "near log(prototypes) means uniform targets, lower objective.target_temperature; msn/ce staying "
                     "near log(prototypes): the masked anchor cannot predict its target, lower objective.mask_ratio")

    def __init__(self, encoder, domain, projector=(256, 256, 64), prototypes: int = 256, temperature: float = 0.1,
                 target_temperature: float = 0.025, sinkhorn_iterations: int = 3, me_max_weight: float = 1.0,
                 freeze_prototypes: int = 0, mask_ratio: float | None = 0.3, momentum: float | None = 0.996):
        super().__init__()
        self.mask_ratio = mask_ratio  # read by the data loader (contracts: Objective.mask_ratio)
        self.projector = msn_projector(encoder.dim, projector)
        d = projector[-1]
        # stored flat [K*d]: the optimizer exempts 1-D parameters from weight decay, as the paper exempts its
        # prototypes (they are used l2-normalised; decay would only shrink them and so raise their step size)
        self.prototypes = nn.Parameter(torch.empty(prototypes * d).uniform_(-d ** -0.5, d ** -0.5))
        self.n_prototypes = prototypes
        self.teacher = EMATeacher(encoder, self.projector)
        self.temperature, self.target_temperature = temperature, target_temperature
        self.sinkhorn_iterations, self.me_max_weight = sinkhorn_iterations, me_max_weight
        self.freeze_prototypes, self.momentum = freeze_prototypes, momentum

    def prototype_matrix(self) -> torch.Tensor:
        """[K d], each prototype of unit length."""
        return F.normalize(self.prototypes.view(self.n_prototypes, -1), dim=1)

    def similarities(self, z: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        """z [b d] projections -> [b K] cosine similarities to the prototypes."""
        return F.normalize(z, dim=1) @ protos.T

    def anchor_rep(self, encoder, batch) -> torch.Tensor:
        """View 0 through the encoder with the domain's mask (the kept tokens; a variable-length batch's padding
        excluded) -> pooled [b d]."""
        x, keep = batch["views"][0], batch["keep"]  # keep [b k], -1 = padding
        pad = batch["pad"][0] if "pad" in batch else None
        return (encoder(x, keep) if pad is None else encoder(x, keep, pad=pad))[1]

    def forward(self, encoder, batch, sched):
        views, pads = batch["views"], batch.get("pad")
        # requires_grad off leaves .grad None, so the optimizer skips the prototypes while they are fixed
        self.prototypes.requires_grad_(sched["step"] >= self.freeze_prototypes)
        rep = self.anchor_rep(encoder, batch)  # [b d]
        # the head sees the masked view and the local views in separate passes, as the official code batches them
        # (one pass per crop size), so its BatchNorm statistics are those of each group
        z = [self.projector(rep)]
        if len(views) > 2:
            local = encode_views(encoder, views[2:], pads[2:] if pads else None)  # n_local x [b d]
            z += list(self.projector(torch.cat(local)).split([len(r) for r in local]))
        protos = self.prototype_matrix()  # [K d]
        anchor = [self.similarities(zi, protos) for zi in z]  # n_anchor x [b K]
        with torch.no_grad():
            t_enc, t_proj = self.teacher.nets
            t_rep = encode_views(t_enc, views[1:2], pads[1:2] if pads else None)[0]
            target = self.similarities(t_proj(t_rep), protos.detach())  # [b K]
        loss, terms = msn_loss(anchor, target, self.temperature, self.target_temperature, self.sinkhorn_iterations,
                               self.me_max_weight)
        # prototypes nearest to some target of the global batch (the official log's count of distinct targets)
        hits = torch.bincount(target.argmax(1), minlength=self.n_prototypes)  # [K]
        return loss, {"rep": rep.detach(), **terms, "prototypes_used": (all_reduce(hits) > 0).sum()}

    @torch.no_grad()
    def branches(self, encoder, batch):
        """online: the masked view's prediction softmax(similarities / temperature); target: the teacher's sharpened,
        balanced assignment of the whole (clean) view."""
        protos = self.prototype_matrix()
        online = F.softmax(self.similarities(self.projector(self.anchor_rep(encoder, batch)), protos)
                           / self.temperature, dim=-1)
        x, pad = batch.get("clean", batch["views"][0]), batch["pad"][0] if "pad" in batch else None
        target = self.similarities(self.teacher.embed(x, pad), protos)
        return online, msn_targets(target, self.target_temperature, self.sinkhorn_iterations)

    @torch.no_grad()
    def after_step(self, encoder, sched):
        self.teacher.update([encoder, self.projector], teacher_momentum(self.momentum, sched))
