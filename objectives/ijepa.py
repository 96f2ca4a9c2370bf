"""I-JEPA (Assran et al. 2023): a context encoder sees the visible tokens; a narrow predictor, given the context
tokens and mask tokens with the positions of the targets, predicts in latent space what an EMA target encoder,
which sees the whole input, outputs at the target tokens (layer-normalised without parameters). Loss: the L2 average
of the paper (its code uses smooth L1: `beta`).

I-JEPA samples one large context block and several target blocks, predicting each target block separately. Here
the domain's mask gives the context (`keep`) and one set of targets (`masked`), so the policy is the domain's
(random patches, time/frequency bands, feature columns) and the targets are predicted together.

A domain that masks by replacing values instead of dropping tokens (tabular VIME, `drops_masked` False) gives the
context encoder its corrupted row (`corrupt_view`) and the target encoder the clean one: the targets are the clean
row's features at the corrupted positions. Without the corruption both encoders would see the same row."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.contracts import Masked, optional
from multissl.dist import all_reduce
from multissl.ema import EMATeacher, teacher_momentum
from multissl.encoder import gather_tokens
from multissl.heads import TokenPredictor
from multissl.objectives.data2vec import masked_rows, regression_loss, token_variance


def ijepa_targets(h: torch.Tensor) -> torch.Tensor:
    """The target encoder's tokens h [b n d] -> targets [b n d]: each token layer-normalised without parameters."""
    return F.layer_norm(h, h.shape[-1:])


@torch.no_grad()
def prediction_cosine(pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Mean cosine between prediction and target over the scored tokens (masked [b m], -1 skipped)."""
    cos = F.cosine_similarity(gather_tokens(pred, masked), gather_tokens(target, masked), dim=-1)  # [b m]
    real = (masked >= 0).to(cos.dtype)
    return all_reduce((cos * real).sum()) / all_reduce(real.sum()).clamp_min(1)  # every process's tokens


class IJEPA(nn.Module):
    global_views = 1
    needs = (Masked,)  # the domain's masks and targets
    needs_token_encoder = True  # the context encoder sees the visible tokens only
    corrupt_view = True  # a domain that replaces masked values (VIME) corrupts the context; the targets are clean
    collapse_hint = ("raise objective.momentum (a slower target encoder) or objective.predictor_depth; target_std "
                     "near 0 means the target encoder collapsed")

    def __init__(self, encoder, domain, predictor_dim: int | None = None, predictor_depth: int = 2,
                 predictor_heads: int = 4, beta: float = 0.0,
                 momentum: float | None = 0.996):
        super().__init__()
        self.beta = beta
        width = predictor_dim or encoder.dim // 2  # narrower than the encoder, as in the paper
        self.predictor = TokenPredictor(encoder.dim, width, predictor_depth, predictor_heads, domain.num_tokens,
                                        encoder.dim, mask_token=optional(domain, Masked, "drops_masked"))
        self.teacher = EMATeacher(encoder)
        self.momentum = momentum

    def forward(self, encoder, batch, sched):
        x, keep, masked = batch["views"][0], batch["keep"], batch["masked"]  # keep [b k], masked [b m]; -1 = padding
        pad = batch["pad"][0] if "pad" in batch else None  # [b n]
        tokens, pooled = encoder(x, keep) if pad is None else encoder(x, keep, pad=pad)  # [b k d]
        pred = self.predictor(tokens, keep, pad=pad)  # [b n d]
        with torch.no_grad():
            (teacher,) = self.teacher.nets
            clean = batch.get("clean", x)
            target = ijepa_targets(teacher(clean)[0] if pad is None else teacher(clean, pad=pad)[0])  # [b n d]
        loss = regression_loss(pred, target, masked, self.beta)
        std, cos = token_variance(target, masked).sqrt(), prediction_cosine(pred, target, masked)
        return loss, {"rep": pooled.detach(), "target_std": std, "pred_cos": cos}

    @torch.no_grad()
    def branches(self, encoder, batch):
        """online: the predictor's output at the target tokens; target: the target encoder's tokens there."""
        x, keep, masked = batch["views"][0], batch["keep"], batch["masked"]
        pad = batch["pad"][0] if "pad" in batch else None
        pred = self.predictor((encoder(x, keep) if pad is None else encoder(x, keep, pad=pad))[0], keep, pad=pad)
        (teacher,) = self.teacher.nets
        clean = batch.get("clean", x)
        target = ijepa_targets((teacher(clean) if pad is None else teacher(clean, pad=pad))[0])
        return masked_rows(pred, masked), masked_rows(target, masked)

    def after_step(self, encoder, sched):
        self.teacher.update([encoder], teacher_momentum(self.momentum, sched))
