"""Masked modelling of a row's features: which features each row masks, VIME's corruption of them by draws from
their column's empirical marginal, and the loss each mode scores (domain.mask_mode: marginal = VIME, drop = MAE)."""
import torch

from ..masking import random_mask
from .losses import vime_loss
from .views import marginal_draws


def feature_mask(batch_size: int, n_features: int, ratio: float, mode: str, rng: torch.Generator):
    """round(ratio F) masked features per row -> (keep [b k], masked [b m]). marginal (VIME): the encoder sees
    every feature, the masked ones replaced by marginal draws (`corrupt`); drop (MAE): it sees the others only."""
    keep, masked = random_mask(batch_size, n_features, ratio, rng)
    if mode == "marginal":
        keep = torch.arange(n_features).repeat(batch_size, 1)  # [b F]
    return keep, masked


def corrupt(view: torch.Tensor, masked: torch.Tensor, train: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """VIME's corruption: the masked features [m] of view [F] replaced by draws from the training rows [n F]."""
    out = view.clone()
    out[masked] = marginal_draws(train, masked, rng)
    return out


def reconstruction_loss(pred, target, masked, vocab_sizes: list[int], mode: str, mask_weight: float):
    """VIME's loss (losses.vime_loss); the "which were masked" term only in marginal mode: in drop mode the decoder
    sees mask tokens where features were masked, so that answer is free."""
    sizes = torch.tensor(vocab_sizes, device=target.device)
    return vime_loss(pred, target, masked, sizes, mask_weight if mode == "marginal" else 0.0)
