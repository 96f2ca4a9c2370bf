"""Predictor-free SimSiam and BYOL of Zhuo et al. 2023 ("Towards a unified theoretical understanding of
non-contrastive learning via rank differential mechanism"). The learned predictor is replaced by a spectral filter of
the global batch's projector outputs Z = U S V^T (SVD detached): the online branch becomes Z V g(S) V^T = U S g(S) V^T
(gradient through Z), and/or the target becomes U S^(1 + p) V^T (p = -1 whitens). A filter that raises the target's
effective rank above the online branch's is what keeps the pair from collapsing; `online="none"` with no target
power is the symmetric, predictor-free SimSiam that collapses (the control).

The SVD runs in float64 (float32 on mps) whatever the autocast precision. Directions the batch does not span (singular
values under numpy's matrix_rank tolerance for the projections' dtype, such as the one a centring BatchNorm removes
when the batch is smaller than the width) get weight 0 in both filters: their singular vectors are round-off, and
the whitened target would otherwise give one of them full weight, a direction that 1 and N processes do not agree
on. So log and negative powers stay finite, and an all-zero batch gives a zero loss and gradient; a batch with NaN
or Inf gives a non-finite loss, which the engine's guard skips."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import all_gather, gather
from multissl.ema import EMATeacher, teacher_momentum
from multissl.encoder import encode_views
from multissl.errors import UserError
from multissl.heads import mlp
from multissl.objectives.byol import byol_loss
from multissl.objectives.simsiam import simsiam_loss

FILTERS = {"poly": lambda s, p: s.pow(p), "log": lambda s, p: s.log(), "log1": lambda s, p: s.log1p(),
           "log1p2": lambda s, p: s.pow(2).log1p()}


@torch.no_grad()
def batch_svd(z: torch.Tensor):
    """U [B r], S [r], V^T [r d] of the detached z [B d], r = min(B, d), and keep [r]: the singular values above
    sigma_max * max(B, d) * eps of z's dtype (numpy's matrix_rank tolerance), the directions the batch spans. The
    tolerance is capped at 1 % of sigma_max: in bfloat16 the formula would exceed sigma_max itself."""
    rel_tol = min(max(z.shape) * torch.finfo(z.dtype).eps, 1e-2)
    z = z.detach().to(torch.float32 if z.device.type == "mps" else torch.float64)
    if not torch.isfinite(z).all():  # the SVD would raise: NaN factors make the loss non-finite and the step skipped
        (b, d), r = z.shape, min(z.shape)
        u, s, vh = (z.new_full(shape, float("nan")) for shape in ((b, r), (r,), (r, d)))
        return u, s, vh, torch.ones_like(s, dtype=torch.bool)
    u, s, vh = torch.linalg.svd(z, full_matrices=False)
    return u, s, vh, s > s.max() * rel_tol


def spanned(s: torch.Tensor, keep: torch.Tensor, fn) -> torch.Tensor:
    """fn(s) on the spanned directions, 0 on the others (fn never sees their round-off values)."""
    return torch.where(keep, fn(torch.where(keep, s, torch.ones_like(s))), torch.zeros_like(s))


def online_filter(z: torch.Tensor, kind: str = "poly", power: float = 2.0) -> torch.Tensor:
    """z [B d] -> z V g(S) V^T [B d], the filter a constant (no gradient through the SVD)."""
    _, s, vh, keep = batch_svd(z)
    w = vh.T @ torch.diag(spanned(s, keep, lambda x: FILTERS[kind](x, power))) @ vh  # [d d]
    return z @ w.to(z.dtype)


@torch.no_grad()
def target_power(z: torch.Tensor, power: float = -0.5) -> torch.Tensor:
    """z [B d] -> U S^(1 + power) V^T [B d], detached."""
    u, s, vh, keep = batch_svd(z)
    return ((u * spanned(s, keep, lambda x: x.pow(1 + power))) @ vh).to(z.dtype)


def rdm_loss(z_online: torch.Tensor, z_target: torch.Tensor, online: str = "poly", online_power: float = 2.0,
             target_p: float | None = None, form: str = "simsiam") -> torch.Tensor:
    """z_online, z_target [b d] on each process (z_target gets no gradient); the filters see the global batch. form:
    "simsiam" (mean -cos) or "byol" (mean 2 - 2 cos)."""
    p, t = gather(z_online), all_gather(z_target)  # [B d]
    p = p if online == "none" else online_filter(p, online, online_power)
    t = t if target_p is None else target_power(t, target_p)
    return simsiam_loss(p, t) if form == "simsiam" else byol_loss(p, t)


class RDM(nn.Module):
    global_views = 2
    batch_statistics = True  # the filters are statistics of the global batch
    collapse_hint = ("raise objective.online_power or set objective.target_power (e.g. -0.5): the target's effective "
                     "rank must stay above the online branch's")

    def __init__(self, encoder, domain, projector=(256, 256, 256), last_bn: bool = True, teacher: bool = False,
                 online: str = "none", online_power: float = 2.0, target_power: float | None = -1.0,
                 momentum: float | None = None):
        super().__init__()
        if online not in (*FILTERS, "none"):
            raise UserError(f"objective.online must be one of {', '.join([*FILTERS, 'none'])}, got {online!r}")
        self.projector = mlp([encoder.dim, *projector], last_bn=last_bn)
        self.teacher = EMATeacher(encoder, self.projector) if teacher else None  # BYOL's form; else stop-gradient
        self.form = {"online": online, "online_power": online_power, "target_p": target_power,
                     "form": "byol" if teacher else "simsiam"}
        self.momentum = momentum

    def targets(self, z: list, views: list, pads) -> list:
        if self.teacher is None:
            return [x.detach() for x in z]
        with torch.no_grad():
            t_enc, t_proj = self.teacher.nets
            return [t_proj(r) for r in encode_views(t_enc, views, pads)]

    def forward(self, encoder, batch, sched):
        views, pads = batch["views"][:2], batch.get("pad")
        reps = encode_views(encoder, views, pads)  # 2 x [b d]
        z = [self.projector(r) for r in reps]
        t = self.targets(z, views, pads)
        loss = (rdm_loss(z[0], t[1], **self.form) + rdm_loss(z[1], t[0], **self.form)) / 2
        with torch.no_grad():
            cos = F.cosine_similarity(z[0], t[1], dim=-1).mean()
        return loss, {"rep": reps[0].detach(), "cos": cos}

    @torch.no_grad()
    def branches(self, encoder, batch):
        """online: the filtered projections; target: the (powered) target projections, both unit length."""
        views, pads = batch["views"][:1], batch.get("pad")
        z = self.projector(encode_views(encoder, views, pads)[0])
        t = self.targets([z], views, pads)[0]
        f = self.form
        p = z if f["online"] == "none" else online_filter(z, f["online"], f["online_power"])
        t = t if f["target_p"] is None else target_power(t, f["target_p"])
        return F.normalize(p, dim=1), F.normalize(t, dim=1)

    def after_step(self, encoder, sched):
        if self.teacher is not None:
            self.teacher.update([encoder, self.projector], teacher_momentum(self.momentum, sched))
