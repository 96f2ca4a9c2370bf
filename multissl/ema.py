"""EMA teacher: a frozen copy of student modules, updated as teacher = m * teacher + (1 - m) * student."""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from multissl.encoder import encode_views
from multissl.schedules import cosine


class EMATeacher(nn.Module):
    """Not called as a module: its `nets` are (teacher copies of the students, in order)."""

    def __init__(self, *students: nn.Module):
        super().__init__()
        self.nets = nn.ModuleList(copy.deepcopy(s) for s in students)
        for p in self.nets.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, students, momentum: float):
        for teacher, student in zip(self.nets, students):
            t = list(teacher.parameters())
            s = [p.detach() for p in student.parameters()]
            torch._foreach_mul_(t, momentum)
            torch._foreach_add_(t, s, alpha=1 - momentum)
            # BatchNorm running statistics follow the student directly, as in BYOL's reference code.
            for tb, sb in zip(teacher.buffers(), student.buffers()):
                tb.copy_(sb)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """The teacher's output for one view x: its encoder's pooled representation through its other nets in
        order (a projector, a head)."""
        enc, *heads = self.nets
        z = encode_views(enc, [x], None if pad is None else [pad])[0]
        for head in heads:
            z = head(z)
        return z


@torch.no_grad()
def predictor_vs_teacher(encoder, batch, online_head, teacher: EMATeacher) -> tuple[torch.Tensor, torch.Tensor]:
    """The two branches of a predictor + EMA teacher objective (BYOL, MoCo v3) on views[0], unit length as their
    losses compare them: online = online_head(encoder(x)), target = the teacher's projection."""
    x, pad = batch["views"][0], batch.get("pad")
    rep = encode_views(encoder, [x], pad)[0]
    return (F.normalize(online_head(rep), dim=1),
            F.normalize(teacher.embed(x, None if pad is None else pad[0]), dim=1))


def teacher_momentum(start: float | None, sched) -> float:
    """An objective's own teacher momentum: cosine from `start` to 1 over the run (DINO's and I-JEPA's 0.996), or the
    engine's ema schedule (`sched["ema"]`, BYOL's short-run default) when start is None. A teacher that follows the
    student as fast as BYOL's lets the two drift together where nothing else holds the targets apart."""
    if start is None:
        return sched["ema"]
    return cosine(sched["step"], sched["total_steps"], start, 1.0)
