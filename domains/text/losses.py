"""Masked language modelling in input space: cross-entropy of the predicted token logits at the masked positions."""
import torch
import torch.nn.functional as F

from multissl.dist import global_mean


def masked_token_loss(logits: torch.Tensor, ids: torch.Tensor, masked: torch.Tensor,
                      special: torch.Tensor | None = None) -> torch.Tensor:
    """logits [b m V] at the masked positions masked [b m] (-1: padding of a variable-length batch), the clean ids
    [b n]; the mean cross-entropy over the masked positions whose id is not special (`special` bool [V]), of every
    process (multissl.dist.global_mean); 0 when none is scored."""
    target = torch.gather(ids, 1, masked.clamp_min(0))  # [b m]
    scored = masked >= 0
    if special is not None:
        scored &= ~special.to(ids.device)[target]
    ce = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), reduction="none").view_as(target)
    return global_mean((ce * scored).sum(), scored.sum())  # over every process's masked tokens
