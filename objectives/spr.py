"""SPR (Schwarzer et al. 2021, "Data-Efficient Reinforcement Learning with Self-Predictive Representations"): from a
step's representation, a transition model fed the actions taken predicts the representations of the next K steps of
the episode; each prediction, projected and passed through a predictor, regresses an EMA teacher's projection of that
step's own augmented observation. What the next frames will hold depends on what one frame does not show
(velocities), so predicting them asks the encoder for it. Needs a domain with episodes and actions (rl)."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.contracts import Episodes
from multissl.dist import gather
from multissl.ema import EMATeacher, teacher_momentum
from multissl.encoder import encode_views
from multissl.heads import mlp
from multissl.optim import scale_lr


def spr_loss(p: torch.Tensor, z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """p, z [b k d], valid [b k] bool: mean over the valid (sample, step) pairs of 2 - 2 cos(p, z); steps past the
    end of an episode count for nothing; z gets no gradient. 0 when every prediction points at its target."""
    per = 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)  # [b k]
    w = valid.to(per.dtype)
    return (per * w).sum() / w.sum().clamp_min(1)


class Transition(nn.Module):
    """z [b d], action -> the next step's z [b d]: z + an MLP of (z, the action's embedding), layer-normed."""

    def __init__(self, dim: int, actions: tuple[str, int], hidden=(256,)):
        super().__init__()
        kind, size = actions
        self.embed = nn.Embedding(size, dim) if kind == "discrete" else nn.Linear(size, dim)
        self.step = mlp([2 * dim, *hidden, dim])
        self.norm = nn.LayerNorm(dim)

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.norm(z + self.step(torch.cat([z, self.embed(action).to(z.dtype)], dim=-1)))


class SPR(nn.Module):
    global_views = 1
    batch_statistics = True  # the loss is a mean over the global batch's valid steps
    needs = (Episodes,)  # the next steps of the sample's episode and the actions taken
    future_steps = 5  # the contract's declaration; an instance predicts its own `steps`
    collapse_hint = "raise objective.predictor_lr (the predictor must outpace the EMA teacher)"

    def __init__(self, encoder, domain, steps: int = 5, projector=(256, 128), predictor=(256, 128),
                 transition=(256,), predictor_lr: float = 30.0, momentum: float | None = None):
        super().__init__()
        self.future_steps, self.momentum = int(steps), momentum
        self.transition = Transition(encoder.dim, domain.actions, transition)
        self.projector = mlp([encoder.dim, *projector])
        self.predictor = mlp([projector[-1], *predictor])
        self.teacher = EMATeacher(encoder, self.projector)
        scale_lr(self.predictor, predictor_lr)

    def forward(self, encoder, batch, sched):
        views, k = batch["views"], self.future_steps  # views: step t, then steps t+1 .. t+k
        rep = encode_views(encoder, views[:1])[0]  # [b d]
        z, preds = rep, []
        for i in range(k):  # roll the latent forward with the action taken at each step
            z = self.transition(z, batch["action"][:, i])
            preds.append(self.predictor(self.projector(z)))
        with torch.no_grad():
            t_enc, t_proj = self.teacher.nets
            targets = [t_proj(r) for r in encode_views(t_enc, views[1:1 + k])]
        p, t = torch.stack(preds, 1), torch.stack(targets, 1)  # [b k e]
        # the mean over the global batch's valid steps: processes hold different counts of them
        loss = spr_loss(gather(p), gather(t), gather(batch["valid"].to(p.dtype)) > 0)
        return loss, {"rep": rep.detach(), "cos": 1 - loss.detach() / 2}

    def after_step(self, encoder, sched):
        self.teacher.update([encoder, self.projector], teacher_momentum(self.momentum, sched))
