"""iBOT (Zhou et al. 2022): DINO's self-distillation of the pooled ([CLS]) output across views, plus masked modelling
with an online tokenizer. The student sees each global view with some tokens replaced by a learnt mask token and, at
those tokens, predicts the EMA teacher's distribution over prototypes for the clean view; the teacher is the
tokenizer, learnt with the student. DINOv2 (Oquab et al. 2023) is a recipe of it (configs/objective/dinov2.yaml):
separate heads, Sinkhorn-Knopp instead of centring the teacher, and the KoLeo regulariser on the pooled features.

At most `mask_ratio` of a view's tokens are masked (iBOT masks 0.3 ± 0.2 in blocks, DINOv2 0.1 to 0.5: 0.3 here, a
random part of the domain's mask where it hides more). Where the domain drops masked tokens (images, audio, video,
rl) both global views get a mask and the encoder puts the
objective's mask token at them. Where it corrupts its input in place instead (text: BERT's [MASK] ids; tables in
VIME mode) view 0 arrives corrupted at its one mask: the student reads it as it is, the teacher reads the clean
view, and the masked-token loss covers view 0.

Collapse shows in the teacher's entropies (`teacher_entropy` for the pooled output, `patch_entropy` for the masked
tokens): near log(out_dim) the targets are uniform (sharpening lost), near 0 one prototype takes everything
(centring lost)."""
import torch
from torch import nn

from multissl.contracts import Masked, optional
from multissl.data import join
from multissl.dist import all_reduce, gather, one_process
from multissl.ema import EMATeacher, teacher_momentum
from multissl.encoder import encode_views, gather_tokens, masked_mean
from multissl.errors import UserError
from multissl.objectives.dino import DINOHead
from multissl.objectives.ibot_losses import (centred_targets, cls_loss, entropy, koleo_loss, patch_loss,
                                             sinkhorn_targets)
from multissl.schedules import linear

CENTERING = ("center", "sinkhorn")


class IBOT(nn.Module):
    global_views = 2
    local_views = 4  # iBOT's ViT recipes take 10 small crops, DINOv2 8; they cost the student alone
    needs = (Masked,)  # the domain's masks
    needs_token_encoder = True  # the student reads the encoder's tokens at every position
    mask_tokens = True  # masked tokens enter the student as the objective's mask token
    masked_views = 2  # one mask per global view, as in iBOT
    corrupt_view = True  # a domain that corrupts in place masks view 0 alone; the teacher reads it clean
    collapse_hint = ("read teacher_entropy and patch_entropy: near log(out_dim) (uniform), lower objective.teacher_temp "
                     "and objective.teacher_temp2; near 0 (one prototype), lower objective.center_momentum and "
                     "objective.center_momentum2, or set objective.centering=sinkhorn")

    def __init__(self, encoder, domain, projector=(256, 256, 64), out_dim: int = 1024, patch_out_dim: int = 1024,
                 shared_head: bool = True, norm_last_layer: bool = True, student_temp: float = 0.1,
                 teacher_temp: float = 0.04, warmup_teacher_temp: float = 0.04, teacher_temp2: float = 0.07,
                 warmup_teacher_temp2: float = 0.04, teacher_temp_warmup: float = 0.3, centering: str = "center",
                 center_momentum: float = 0.9, center_momentum2: float = 0.9, sinkhorn_iterations: int = 3,
                 lambda1: float = 1.0, lambda2: float = 1.0, koleo_weight: float = 0.0, freeze_last_layer: int = 6,
                 mask_ratio: float | None = 0.3, momentum: float | None = 0.996):
        super().__init__()
        self.mask_ratio = mask_ratio  # read by the data loader (contracts: Objective.mask_ratio)
        if centering not in CENTERING:
            raise UserError(f"objective.centering must be one of {', '.join(CENTERING)}, got {centering!r}")
        corrupts = optional(domain, Masked, "corrupt") is not None
        if not corrupts and optional(domain, Masked, "drops_masked") is False:
            raise UserError(f"objective=ibot needs masked tokens dropped or corrupted; domain "
                            f"{type(domain).__name__} keeps them as they are")
        # no BatchNorm in the heads (the paper's ViT heads have none): the masked tokens a process holds vary in
        # number, which a BatchNorm synchronised over processes cannot take
        self.head = DINOHead(encoder.dim, projector, out_dim, norm_last_layer, use_bn=False)
        self.patch_head = None if shared_head else DINOHead(encoder.dim, projector, patch_out_dim, norm_last_layer,
                                                            use_bn=False)
        # a domain that corrupts its input in place needs no mask token; one that drops tokens gets it at them
        self.mask_token = None if corrupts else nn.Parameter(nn.init.trunc_normal_(torch.zeros(encoder.dim), std=0.02))
        self.teacher = EMATeacher(encoder, *self.heads())
        self.student_temp, self.teacher_temp, self.warmup_teacher_temp = student_temp, teacher_temp, warmup_teacher_temp
        self.teacher_temp2, self.warmup_teacher_temp2 = teacher_temp2, warmup_teacher_temp2
        self.teacher_temp_warmup, self.centering, self.iterations = teacher_temp_warmup, centering, sinkhorn_iterations
        self.center_momentum, self.center_momentum2 = center_momentum, center_momentum2
        self.lambda1, self.lambda2, self.koleo_weight = lambda1, lambda2, koleo_weight
        self.freeze_last_layer, self.momentum = freeze_last_layer, momentum
        self.register_buffer("center", torch.zeros(out_dim))
        self.register_buffer("center2", torch.zeros(out_dim if shared_head else patch_out_dim))
        self.pending = []  # (step, cls centre [K], patch centre [K2]) of this process, until after_step

    @property
    def batch_statistics(self) -> bool:
        """Sinkhorn-Knopp and KoLeo couple the samples of the global batch; centring is state, not a loss term."""
        return self.centering == "sinkhorn" or self.koleo_weight > 0

    @property
    def projector(self):
        """The [CLS] head's MLP: its bottleneck output is what rankme_proj reads (the last layer is a classifier)."""
        return self.head.mlp

    def heads(self) -> list[nn.Module]:
        return [self.head] + ([self.patch_head] if self.patch_head is not None else [])

    def temperature(self, sched) -> tuple[float, float]:
        """Teacher temperatures of the pooled output and of the tokens: each linear from its warm-up value over the
        first teacher_temp_warmup of training (the papers: 30 epochs), then constant."""
        steps = self.teacher_temp_warmup * sched["total_steps"]
        return (linear(sched["step"], steps, self.warmup_teacher_temp, self.teacher_temp),
                linear(sched["step"], steps, self.warmup_teacher_temp2, self.teacher_temp2))

    def encode(self, encoder, views: list, pads: list | None, masks: list | None = None, mask_token=None):
        """Global views -> (tokens, pooled): g x [b n d] and g x [b d]. masks: one [b m] per view (-1 = padding;
        a row of -1 masks nothing), whose tokens enter as mask_token. Views of one shape share a forward pass."""
        g, token = len(views), ({} if masks is None else {"mask_token": mask_token})
        kw = [({"pad": pads[i]} if pads else {}) | ({} if masks is None else {"masked": masks[i]}) for i in range(g)]
        if all(v.shape == views[0].shape for v in views) and (not pads or all(p.shape == pads[0].shape
                                                                               for p in pads[:g])):
            tokens, pooled = encoder(join(views), **{k: torch.cat([w[k] for w in kw]) for k in kw[0]}, **token)
            return list(tokens.chunk(g)), list(pooled.chunk(g))
        out = [encoder(v, **k, **token) for v, k in zip(views, kw)]
        return [t for t, _ in out], [p for _, p in out]

    def student(self, encoder, batch) -> dict:
        """The student's side: "cls" n_views x [b K] head outputs (global views first), "patch" per masked view
        [b m K2] at its masked tokens, "pooled" per global view [b d], "masks" per masked view [b m]."""
        views, pads = batch["views"], batch.get("pad")
        g, b = min(self.global_views, len(views)), len(views[0])
        masks = list(batch["masked"].split(b))[:g]  # view-major: one [b m] per masked view
        if self.mask_token is None:  # view 0 arrives corrupted
            tokens, pooled = self.encode(encoder, views[:g], pads)
        else:  # the global views without a mask of their own get a row of -1: nothing masked
            rows = masks + [torch.full_like(masks[0], -1)] * (g - len(masks))
            tokens, pooled = self.encode(encoder, views[:g], pads, rows, self.mask_token)
        local = encode_views(encoder, views[g:], pads[g:] if pads else None)  # n_local x [b d], unmasked
        # no BatchNorm in the head: one pass or several give the same outputs
        cls = list(self.head(torch.cat([*pooled, *local])).split(b))
        patch_head = self.patch_head or self.head
        patch = [patch_head(gather_tokens(t, m)) for t, m in zip(tokens, masks)]  # [b m K2]
        return {"cls": cls, "patch": patch, "pooled": pooled, "masks": masks}

    @torch.no_grad()
    def targets(self, batch, masks: list, temps: tuple[float, float], step: int) -> tuple[list, list]:
        """The teacher's side on the clean global views: (cls targets g x [b K], token targets per masked view
        [b m K2]); in centring mode it stashes this step's centres for after_step."""
        views, pads = batch["views"], batch.get("pad")
        g, b = min(self.global_views, len(views)), len(views[0])
        t_enc, t_head, *rest = self.teacher.nets
        t_patch_head = rest[0] if rest else t_head
        clean = [batch["clean"], *views[1:g]] if self.mask_token is None else views[:g]
        tokens, pooled = self.encode(t_enc, clean, pads)
        t_cls = t_head(torch.cat(pooled))  # [g*b K]
        if self.centering == "sinkhorn":  # over the global batch: both views' rows, every masked token of both
            q_cls = sinkhorn_targets(t_cls, temps[0], self.iterations)
            t_patch = [t_patch_head(gather_tokens(t, m)) for t, m in zip(tokens, masks)]  # [b m K2]
            real = [m >= 0 for m in masks]
            q_rows = sinkhorn_targets(torch.cat([t[r] for t, r in zip(t_patch, real)]), temps[1], self.iterations)
            q_patch = [torch.zeros_like(t).masked_scatter(r.unsqueeze(-1), q) for t, r, q in
                       zip(t_patch, real, q_rows.split([int(r.sum()) for r in real]))]
            return list(q_cls.split(b)), q_patch
        everywhere = [t_patch_head(t) for t in tokens]  # g x [b n K2]: the token centre covers every token
        cls_centre = t_cls.mean(0)
        # per sample the mean over its real tokens, then over samples and views (iBOT's)
        patch_centre = torch.stack([masked_mean(t, pads[i] if pads else None).mean(0)
                                    for i, t in enumerate(everywhere)]).mean(0)
        self.pending.append((step, cls_centre, patch_centre))
        q_cls = centred_targets(t_cls, self.center, temps[0])
        q_patch = [centred_targets(gather_tokens(t, m), self.center2, temps[1]) for t, m in zip(everywhere, masks)]
        return list(q_cls.split(b)), q_patch

    def forward(self, encoder, batch, sched):
        # the last layers stay fixed at first: their early gradients are noisy and they are easy to wreck.
        # requires_grad off leaves their .grad None, so the optimizer skips them (no step, no weight decay)
        for head in self.heads():
            for p in head.last_layer():
                p.requires_grad_(sched["step"] >= self.freeze_last_layer)
        s = self.student(encoder, batch)
        temps = self.temperature(sched)
        q_cls, q_patch = self.targets(batch, s["masks"], temps, sched["step"])
        cls = cls_loss(s["cls"], q_cls, self.student_temp)
        patch = patch_loss(s["patch"], q_patch, s["masks"], self.student_temp)
        loss = self.lambda1 * cls + self.lambda2 * patch
        real = torch.stack([m >= 0 for m in s["masks"]])  # [views b m]
        logs = {"rep": s["pooled"][0].detach(), "cls_loss": cls.detach(), "patch_loss": patch.detach(),
                "teacher_entropy": entropy(torch.stack(q_cls)), "patch_entropy": entropy(torch.stack(q_patch), real),
                "teacher_temp": temps[0]}
        if self.koleo_weight > 0:  # per global view over the gathered global batch (DINOv2 sums the two)
            koleo = sum(koleo_loss(gather(p)) for p in s["pooled"])
            loss = loss + self.koleo_weight * koleo
            logs["koleo"] = koleo.detach()
        return loss, logs

    @torch.no_grad()
    def branches(self, encoder, batch):
        """online: the student's distribution over the K outputs of the clean view 0; target: the teacher's, centred
        and sharpened (or Sinkhorn-Knopp over this batch) at the final teacher temperature."""
        x, pad = batch.get("clean", batch["views"][0]), batch.get("pad")
        pads = None if pad is None else pad[:1]
        s = self.head(encode_views(encoder, [x], pads)[0])
        t_enc, t_head, *_ = self.teacher.nets
        t = t_head(encode_views(t_enc, [x], pads)[0])
        if self.centering == "sinkhorn":
            with one_process():  # this evaluation batch alone
                target = sinkhorn_targets(t, self.teacher_temp, self.iterations)
        else:
            target = centred_targets(t, self.center, self.teacher_temp)
        return torch.softmax(s / self.student_temp, dim=-1), target

    @torch.no_grad()
    def after_step(self, encoder, sched):
        self.teacher.update([encoder, *self.heads()], teacher_momentum(self.momentum, sched))
        mine = [(c, c2) for s, c, c2 in self.pending if s == sched["step"]]  # a skipped step's stash is dropped
        self.pending.clear()
        if mine:  # micro-batches are of one size: the mean of their means is the step's mean, as is the process mean
            for buf, new, m in ((self.center, [c for c, _ in mine], self.center_momentum),
                                (self.center2, [c2 for _, c2 in mine], self.center_momentum2)):
                batch_centre = all_reduce(torch.stack(new).mean(0), "mean")
                buf.mul_(m).add_(batch_centre.to(buf.dtype), alpha=1 - m)
