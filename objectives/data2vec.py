"""data2vec (Baevski et al. 2022) in its 2.0 form (Baevski et al. 2023): the student encodes the visible tokens only
(MAE-style dropping) and a light decoder fills in the masked ones with mask tokens (multissl.heads.TokenPredictor);
it regresses, at the masked positions, contextualised targets from an EMA teacher that sees the whole input.

Targets: the average of the teacher's top-K block outputs, each instance-normalised (per sample and channel, over
the sample's real tokens, no parameters), then layer-normalised per token (2.0's image recipe; its speech recipe
leaves the final layer norm out: `layer_norm_targets`). Loss: L2 (2.0), or smooth L1 with threshold `beta` (1.0).

A domain that masks by replacing values instead of dropping tokens (tabular VIME, `drops_masked` False) gives the
student its corrupted row (`corrupt_view`) and the teacher the clean one: the student predicts the clean row's
contextualised features at the corrupted positions. Without the corruption the student would see exactly what the
teacher sees, and copying its input would solve the task."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.contracts import Encoder, Masked, optional
from multissl.dist import all_reduce, global_mean
from multissl.ema import EMATeacher, teacher_momentum
from multissl.encoder import gather_tokens
from multissl.errors import UserError
from multissl.heads import TokenPredictor


def instance_norm(h: torch.Tensor, pad: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """h [b n d] normalised per sample and channel over its tokens, padding (pad [b n], True) left out: what
    F.instance_norm does over the token axis (biased variance), so that a sample's target is its own."""
    real = h.new_ones(h.shape[:2]) if pad is None else (~pad).to(h.dtype)
    real = real.unsqueeze(-1)  # [b n 1]
    count = real.sum(1, keepdim=True).clamp_min(1)  # [b 1 1]
    mean = (h * real).sum(1, keepdim=True) / count  # [b 1 d]
    var = ((h - mean).pow(2) * real).sum(1, keepdim=True) / count
    return (h - mean) / torch.sqrt(var + eps)


def data2vec_targets(hidden: list, top_k: int | None = None, layer_norm: bool = True,
                     pad: torch.Tensor | None = None) -> torch.Tensor:
    """hidden: block outputs, first to last, each [b n d] -> targets [b n d]: the last top_k (None: all) blocks,
    each instance-normalised, averaged, then (layer_norm) normalised per token without parameters."""
    top = hidden[-top_k:] if top_k else hidden
    # statistics in at least float32: under bf16 autocast the blocks' outputs are bf16
    y = sum(instance_norm(h.to(torch.promote_types(h.dtype, torch.float32)), pad) for h in top) / len(top)  # [b n d]
    return F.layer_norm(y, y.shape[-1:]) if layer_norm else y


def regression_loss(pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor, beta: float = 0.0) -> torch.Tensor:
    """pred, target [b n d], scored at masked [b m] (-1 = padding, not scored): the mean over the scored tokens of
    every process (multissl.dist.global_mean) and channels of the squared error (beta 0) or of smooth L1 with
    threshold beta. No gradient reaches the target."""
    p, t = gather_tokens(pred, masked), gather_tokens(target.detach(), masked)  # [b m d]
    err = F.mse_loss(p, t, reduction="none") if beta == 0 else F.smooth_l1_loss(p, t, reduction="none", beta=beta)
    real = (masked >= 0).unsqueeze(-1).to(err.dtype)  # [b m 1]
    return global_mean((err * real).sum(), real.sum() * err.shape[-1])  # over every process's tokens


@torch.no_grad()
def token_variance(y: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Per-channel variance over the scored tokens of every process (y [b n d] at masked [b m], -1 skipped),
    averaged over channels: 0 when every token gets the same vector (collapse). The same value on every process."""
    y, real = gather_tokens(y, masked).float(), (masked >= 0).unsqueeze(-1).float()  # [b m d], [b m 1]
    count = all_reduce(real.sum())
    s, ss = all_reduce((y * real).sum((0, 1))), all_reduce((y.pow(2) * real).sum((0, 1)))  # [d]
    return ((ss - s.pow(2) / count.clamp_min(1)) / (count - 1).clamp_min(1)).mean()


def masked_rows(x: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """x [b n d] at the masked positions [b m] (-1 skipped) -> the rows [r d]."""
    return gather_tokens(x, masked)[masked >= 0]


class Data2Vec(nn.Module):
    global_views = 1
    needs = (Masked,)  # the domain's masks and targets
    needs_token_encoder = True  # the student sees the visible tokens; the targets come from inside the teacher
    corrupt_view = True  # a domain that replaces masked values (VIME) corrupts the student's view, not the teacher's
    collapse_hint = ("raise objective.momentum (a slower teacher) and keep objective.layer_norm_targets=true; "
                     "target_var near 0 means the targets collapsed")

    def __init__(self, encoder, domain, top_k: int | None = None, layer_norm_targets: bool = True, beta: float = 0.0,
                 decoder_dim: int = 64, decoder_depth: int = 2, decoder_heads: int = 4,
                 momentum: float | None = 0.996):
        super().__init__()
        if optional(encoder, Encoder, "hidden_states") is None:
            raise UserError(f"objective=data2vec reads the blocks' outputs, which encoder {type(encoder).__name__} "
                            f"does not give (hidden_states); use encoder=transformer")
        self.top_k, self.layer_norm_targets, self.beta = top_k, layer_norm_targets, beta
        self.decoder = TokenPredictor(encoder.dim, decoder_dim, decoder_depth, decoder_heads, domain.num_tokens,
                                      encoder.dim, mask_token=optional(domain, Masked, "drops_masked"))
        self.teacher = EMATeacher(encoder)
        self.momentum = momentum

    @torch.no_grad()
    def targets(self, x, pad: torch.Tensor | None) -> torch.Tensor:
        """The teacher's targets [b n d] for the whole (clean) input x."""
        (teacher,) = self.teacher.nets
        hidden = teacher.hidden_states(x, pad=pad)
        if self.top_k is not None and not 1 <= self.top_k <= len(hidden):
            raise UserError(f"objective.top_k={self.top_k} must be between 1 and the encoder's {len(hidden)} blocks "
                            f"(null = all of them)")
        return data2vec_targets(hidden, self.top_k, self.layer_norm_targets, pad)

    def forward(self, encoder, batch, sched):
        x, keep, masked = batch["views"][0], batch["keep"], batch["masked"]  # keep [b k], masked [b m]; -1 = padding
        pad = batch["pad"][0] if "pad" in batch else None  # [b n]
        tokens, pooled = encoder(x, keep) if pad is None else encoder(x, keep, pad=pad)  # [b k d]
        pred = self.decoder(tokens, keep, pad=pad)  # [b n d]
        target = self.targets(batch.get("clean", x), pad)  # [b n d]
        loss = regression_loss(pred, target, masked, self.beta)
        logs = {"target_var": token_variance(target, masked), "pred_var": token_variance(pred.detach(), masked),
                "mse": regression_loss(pred.detach(), target, masked)}
        return loss, {"rep": pooled.detach(), **logs}

    @torch.no_grad()
    def branches(self, encoder, batch):
        """online: the decoder's predictions at the masked tokens; target: the teacher's targets there."""
        x, keep, masked = batch["views"][0], batch["keep"], batch["masked"]
        pad = batch["pad"][0] if "pad" in batch else None
        tokens = (encoder(x, keep) if pad is None else encoder(x, keep, pad=pad))[0]
        pred, target = self.decoder(tokens, keep, pad=pad), self.targets(batch.get("clean", x), pad)
        return masked_rows(pred, masked), masked_rows(target, masked)

    def after_step(self, encoder, sched):
        self.teacher.update([encoder], teacher_momentum(self.momentum, sched))
