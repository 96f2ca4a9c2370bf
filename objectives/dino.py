"""DINO (Caron et al. 2021): a student matches the sharpened, centred output distribution of its EMA teacher, the
teacher seeing the global views only and the student every view (multi-crop).

Two opposite forces keep it from collapsing: centring (subtracting a running mean of the teacher's outputs) pushes
the teacher towards uniform, sharpening (a low teacher temperature) towards one dimension. The logs show which one
wins: `teacher_entropy` near log(out_dim) is the uniform collapse (the loss then sits at log(out_dim)), near 0 the
one-dimension collapse; `kl` (teacher || student) falls to 0 in both."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import all_reduce
from multissl.ema import EMATeacher, teacher_momentum
from multissl.encoder import encode_views, view_pairs
from multissl.schedules import linear


def dino_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor, teacher_temp: float,
              student_temp: float = 0.1) -> torch.Tensor:
    """student: n_views x [b K] logits (global views first); teacher: n_global x [b K] logits; center [K].
    Cross-entropy between softmax((teacher_i - center) / teacher_temp) and softmax(student_j / student_temp) for
    every pair i != j, mean over samples, then over pairs. Neither the teacher nor the centre gets a gradient."""
    targets = [F.softmax((t - center).detach() / teacher_temp, dim=-1) for t in teacher]
    log_p = [F.log_softmax(s / student_temp, dim=-1) for s in student]
    pairs = view_pairs(len(student), len(teacher))
    return sum(-(targets[i] * log_p[j]).sum(-1).mean() for i, j in pairs) / len(pairs)


def teacher_entropy(teacher: list[torch.Tensor], center: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    """Mean entropy (nats) of the teacher's centred, sharpened distributions: 0 = one-hot, log(K) = uniform."""
    log_q = [F.log_softmax((t - center).detach() / teacher_temp, dim=-1) for t in teacher]
    return sum(-(lq.exp() * lq).sum(-1).mean() for lq in log_q) / len(log_q)


class DINOHead(nn.Module):
    """MLP (Linear-[BatchNorm]-GELU blocks, then a Linear) to a bottleneck, l2-normalised, then a weight-normalised
    linear layer without bias to out_dim: W = g * V / |V| per output row. norm_last_layer fixes g = 1 (the paper's
    stabiliser: the output scale cannot grow), otherwise g is learnt (initialised to 1). use_bn: the paper's option
    for convolutional backbones; it spreads the samples' outputs apart from the first step."""

    def __init__(self, in_dim: int, widths=(256, 256, 64), out_dim: int = 1024, norm_last_layer: bool = True,
                 use_bn: bool = False):
        super().__init__()
        dims = [in_dim, *widths]
        layers = []
        for d_in, d_out in zip(dims[:-2], dims[1:-1]):
            layers += [nn.Linear(d_in, d_out), *([nn.BatchNorm1d(d_out)] if use_bn else []), nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(dims[-2], dims[-1]))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last = nn.Linear(widths[-1], out_dim, bias=False)  # holds V; its scale cancels in the normalisation
        self.last_g = None if norm_last_layer else nn.Parameter(torch.ones(out_dim, 1))

    def last_layer(self) -> list[nn.Parameter]:
        return [p for p in (self.last.weight, self.last_g) if p is not None]

    def forward(self, x):  # [b d] -> [b out_dim]
        w = F.normalize(self.last.weight, dim=1)  # [out_dim bottleneck]
        if self.last_g is not None:
            w = w * self.last_g
        return F.linear(F.normalize(self.mlp(x), dim=-1), w)


class DINO(nn.Module):
    global_views = 2
    local_views = 4  # the paper's 8 or 10 small crops cost the student alone; see configs/objective/dino.yaml
    collapse_hint = ("read dino/teacher_entropy: near log(out_dim) (uniform), lower objective.teacher_temp; "
                     "near 0 (one dimension), lower objective.center_momentum so the centre follows faster")

    def __init__(self, encoder, domain, projector=(256, 256, 64), out_dim: int = 1024, norm_last_layer: bool = True,
                 student_temp: float = 0.1, teacher_temp: float = 0.04, warmup_teacher_temp: float = 0.04,
                 teacher_temp_warmup: float = 0.0, center_momentum: float = 0.9, freeze_last_layer: int = 6,
                 use_bn: bool = True, momentum: float | None = 0.996):
        super().__init__()
        self.head = DINOHead(encoder.dim, projector, out_dim, norm_last_layer, use_bn)
        self.teacher = EMATeacher(encoder, self.head)
        self.student_temp, self.teacher_temp, self.warmup_teacher_temp = student_temp, teacher_temp, warmup_teacher_temp
        self.teacher_temp_warmup, self.center_momentum = teacher_temp_warmup, center_momentum
        self.freeze_last_layer, self.momentum = freeze_last_layer, momentum
        self.register_buffer("center", torch.zeros(out_dim))
        self.pending = []  # (step, mean teacher output [K]) of this process, until after_step

    @property
    def projector(self):
        """The head's MLP: its bottleneck output is what rankme_proj reads (the last layer is a classifier)."""
        return self.head.mlp

    def temperature(self, sched) -> float:
        """Teacher temperature: linear from warmup_teacher_temp to teacher_temp over the first teacher_temp_warmup
        of training (the paper: 30 epochs of 100 or more), then constant."""
        return linear(sched["step"], self.teacher_temp_warmup * sched["total_steps"], self.warmup_teacher_temp,
                      self.teacher_temp)

    def forward(self, encoder, batch, sched):
        views, pads = batch["views"], batch.get("pad")
        g = min(self.global_views, len(views))
        # the paper keeps the last layer fixed at first: its early gradients are noisy and it is easy to wreck.
        # requires_grad off leaves its .grad None, so the optimizer skips it (no step, no weight decay)
        for p in self.head.last_layer():
            p.requires_grad_(sched["step"] >= self.freeze_last_layer)
        reps = encode_views(encoder, views, pads)  # n_views x [b d]
        # one head pass over all views: a BatchNorm in it sees every crop together, as in the paper
        s = self.head(torch.cat(reps)).split([len(r) for r in reps])  # n_views x [b K]
        with torch.no_grad():
            t_enc, t_head = self.teacher.nets
            t_reps = encode_views(t_enc, views[:g], pads[:g] if pads else None)
            t = t_head(torch.cat(t_reps)).split([len(r) for r in t_reps])  # g x [b K]
        temp = self.temperature(sched)
        loss = dino_loss(s, t, self.center, temp, self.student_temp)
        # the centre moves in after_step from the global batch, so a skipped step leaves it where it was
        self.pending.append((sched["step"], torch.cat(t).mean(0)))
        with torch.no_grad():
            h = teacher_entropy(t, self.center, temp)
        return loss, {"rep": reps[0].detach(), "teacher_entropy": h, "kl": loss.detach() - h, "teacher_temp": temp}

    @torch.no_grad()
    def branches(self, encoder, batch):
        """online: the student's distribution over the K outputs; target: the teacher's, centred and sharpened at
        the final teacher temperature."""
        x, pad = batch["views"][0], batch.get("pad")
        s = self.head(encode_views(encoder, [x], pad)[0])
        t = self.teacher.embed(x, None if pad is None else pad[0])
        return F.softmax(s / self.student_temp, dim=-1), F.softmax((t - self.center) / self.teacher_temp, dim=-1)

    @torch.no_grad()
    def after_step(self, encoder, sched):
        self.teacher.update([encoder, self.head], teacher_momentum(self.momentum, sched))
        mine = [c for s, c in self.pending if s == sched["step"]]  # a skipped step's stash is dropped
        self.pending.clear()
        if mine:  # micro-batches are of one size: the mean of their means is the step's mean, as is the process mean
            batch_center = all_reduce(torch.stack(mine).mean(0), "mean")
            self.center.mul_(self.center_momentum).add_(batch_center.to(self.center.dtype),
                                                        alpha=1 - self.center_momentum)
