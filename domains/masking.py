"""Masks are index tensors (I-JEPA style): `keep` [b k] and `masked` [b m], the same k and m for every
sample so masked objectives can drop tokens. Policies differ per domain; the format does not."""
import torch


def split_indices(scores: torch.Tensor, n_keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [b n]: lower = keep. Returns sorted (keep [b n_keep], masked [b n - n_keep])."""
    order = scores.argsort(dim=1)
    keep, masked = order[:, :n_keep], order[:, n_keep:]
    return keep.sort(1).values, masked.sort(1).values


def random_mask(batch_size: int, n_tokens: int, ratio: float, rng: torch.Generator):
    """MAE's uniform random masking: round(ratio * n) tokens masked per sample, at least one kept."""
    n_mask = min(max(int(round(ratio * n_tokens)), 1), n_tokens - 1)
    return split_indices(torch.rand(batch_size, n_tokens, generator=rng), n_tokens - n_mask)
