"""VIME's masked-modeling losses in input space (Yoon et al. 2020): reconstruct the masked features and
predict which were masked. pred [b F T]: channel 0 the value, 1..V category logits, -1 the "was masked" logit."""
import torch
import torch.nn.functional as F

from multissl.dist import global_mean

from ..features import FIRST_CATEGORY


def masked_positions(masked: torch.Tensor, n: int) -> torch.Tensor:
    """masked [b m] indices -> bool [b n]."""
    return torch.zeros(masked.shape[0], n, dtype=torch.bool, device=masked.device).scatter(1, masked, True)


def feature_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, scored: torch.Tensor,
                                vocab_sizes: torch.Tensor) -> torch.Tensor:
    """Mean over the scored cells whose target is known of: squared error of channel 0 (numeric
    features), cross-entropy of the logits of the column's own vocabulary, channels 1..V_j (categorical
    features, target id - 2). target [b F] encoded rows, scored bool [b F], vocab_sizes [F] (0 = numeric).
    Missing targets (NaN, id 1) are not scored. 0 when nothing is scored."""
    b, n = target.shape
    cat = vocab_sizes > 0  # [F]
    known = torch.where(cat, target >= FIRST_CATEGORY, ~target.isnan())  # [b F]
    cells = scored & known
    per = (pred[..., 0] - target.nan_to_num()) ** 2  # [b F]
    v = int(vocab_sizes.max())
    if v > 0:
        # numeric columns get one valid logit so their (discarded) cross-entropy stays finite, gradient too
        allowed = torch.arange(v, device=pred.device) < vocab_sizes.clamp_min(1)[:, None]  # [F V]
        logits = pred[..., 1:1 + v].masked_fill(~allowed, float("-inf"))  # [b F V]
        # numeric cells hold standardized values, which may exceed any vocabulary: class 0 there
        cls = torch.where(cat & known, target.nan_to_num() - FIRST_CATEGORY, 0).long()  # [b F]
        ce = F.cross_entropy(logits.reshape(b * n, v), cls.reshape(-1), reduction="none").view(b, n)
        per = torch.where(cat, ce, per)
    return global_mean((per * cells).sum(), cells.sum())  # every process's cells: their counts differ


def mask_prediction_loss(logit: torch.Tensor, was_masked: torch.Tensor) -> torch.Tensor:
    """VIME's mask estimator: binary cross-entropy of logit [b F] against was_masked bool [b F], all cells."""
    return F.binary_cross_entropy_with_logits(logit, was_masked.to(logit.dtype))


def vime_loss(pred, target, masked, vocab_sizes, mask_weight: float) -> torch.Tensor:
    """Reconstruction of the masked features + mask_weight (VIME's alpha) x the mask estimation loss."""
    was_masked = masked_positions(masked, target.shape[1])
    return (feature_reconstruction_loss(pred, target, was_masked, vocab_sizes)
            + mask_weight * mask_prediction_loss(pred[..., -1], was_masked))
