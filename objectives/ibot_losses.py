"""iBOT's and DINOv2's losses as pure functions of tensors (the module is objectives/ibot.py): the teacher's targets
(centred and sharpened, or Sinkhorn-Knopp), the [CLS] cross-entropy across views, the masked-token cross-entropy and
the KoLeo regulariser. Sinkhorn-Knopp is SwAV's (objectives/swav.py): the same iterations DINOv2 runs on its teacher."""
import torch
import torch.nn.functional as F

from multissl.encoder import view_pairs
from multissl.objectives.swav import sinkhorn


def centred_targets(logits: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
    """[... K] teacher logits -> softmax((logits - center) / temp): iBOT's centring and sharpening, no gradient."""
    return F.softmax((logits - center).detach() / temp, dim=-1)


def sinkhorn_targets(logits: torch.Tensor, temp: float, iterations: int = 3) -> torch.Tensor:
    """[r K] teacher logits of this process's rows -> [r K] assignments (rows sum to 1) that spread the rows of every
    process evenly over the K prototypes (DINOv2's centring): exp(logits / temp) scaled alternately per prototype and
    per row `iterations` times. Processes may hold different row counts (masked tokens); an empty set stays empty."""
    if logits.shape[0] == 0:
        return logits.detach().clone()
    return sinkhorn(logits.detach(), temp, iterations)


def cls_loss(student: list[torch.Tensor], targets: list[torch.Tensor], student_temp: float = 0.1) -> torch.Tensor:
    """student: n_views x [b K] logits (global views first); targets: n_global x [b K] teacher distributions. DINO's
    loss: cross-entropy of softmax(student_j / student_temp) against targets_i for every pair i != j, mean over
    samples, then over pairs."""
    log_p = [F.log_softmax(s / student_temp, dim=-1) for s in student]
    pairs = view_pairs(len(student), len(targets))
    return sum(-(targets[i].detach() * log_p[j]).sum(-1).mean() for i, j in pairs) / len(pairs)


def patch_loss(student: list[torch.Tensor], targets: list[torch.Tensor], masked: list[torch.Tensor],
               student_temp: float = 0.1) -> torch.Tensor:
    """Per masked view i: student [b m K] logits at its masked tokens, targets [b m K] the teacher's distributions
    for the clean view there, masked [b m] (-1 = padding, not scored). Per sample the mean cross-entropy over its
    masked tokens (0 for a sample without any, which still counts), mean over samples, then over views: iBOT's and
    DINOv2's weighting, so a sample with few masked tokens weighs as much as one with many."""
    total = 0
    for s, t, m in zip(student, targets, masked, strict=True):
        ce = -(t.detach() * F.log_softmax(s / student_temp, dim=-1)).sum(-1)  # [b m]
        real = (m >= 0).to(ce.dtype)
        total = total + ((ce * real).sum(1) / real.sum(1).clamp_min(1)).mean()
    return total / len(student)


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x [b d] (the global batch: gather it first) -> the Kozachenko-Leonenko entropy estimate's loss of the
    l2-normalised rows, -mean_i log |x_i - x_nn(i)| with nn(i) the nearest other row (largest cosine). It pushes
    nearest neighbours apart, spreading the batch over the sphere. In float32 whatever the autocast."""
    with torch.autocast(x.device.type, enabled=False):
        x = F.normalize(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=-1, eps=eps)
        with torch.no_grad():
            dots = x @ x.T  # [b b]
            dots.fill_diagonal_(float("-inf"))
            nearest = dots.argmax(1)
        dist = F.pairwise_distance(x, x[nearest], p=2, eps=eps)  # eps inside: finite gradient for duplicates
        return -torch.log(dist + eps).mean()


def entropy(q: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy (nats) of distributions q [... K] (where rows [...] is True): 0 = one-hot, log K = uniform."""
    h = -torch.special.xlogy(q, q).sum(-1)
    if rows is None:
        return h.mean()
    return (h * rows).sum() / rows.sum().clamp_min(1)
