"""Continued pretraining of a loaded backbone (encoder=timm, encoder=hf): its layer groups frozen or run at a lower
learning rate. A group is an int per parameter, 0 for the stem or embeddings, then one per block in order; the
engine reads the `lr_scale` each parameter carries (multissl.optim.param_groups)."""
import re

import torch
from torch import nn

from multissl.errors import UserError


def set_trainable(model: nn.Module, group_of, freeze, lr_scale: float, layer_decay: float | None):
    """freeze: null, "all", or n: groups below n get no gradient; the rest run at lr_scale x the lr, times
    layer_decay ** (groups after theirs) where set (the layer-wise decay of BEiT and MAE's fine-tuning)."""
    groups = {n: group_of(n) for n, _ in model.named_parameters()}
    last = max(groups.values())
    if freeze not in (None, "all") and not (isinstance(freeze, int) and not isinstance(freeze, bool) and freeze >= 0):
        raise UserError(f"encoder.freeze must be null, all or a number of layer groups (0..{last + 1}), got {freeze!r}")
    if lr_scale <= 0 or (layer_decay is not None and not 0 < layer_decay <= 1):
        raise UserError(f"encoder.lr_scale must be > 0 and encoder.layer_decay in (0, 1], got {lr_scale}, "
                        f"{layer_decay}; freeze layers with encoder.freeze")
    cut = last + 1 if freeze == "all" else freeze or 0
    for n, p in model.named_parameters():
        p.requires_grad_(groups[n] >= cut)
        p.lr_scale = lr_scale * (layer_decay ** (last - groups[n]) if layer_decay else 1.0)


STEM = ("embed", "feature_extractor", "feature_projection")  # embeddings; a speech model's convolutions


def layer_group(name: str) -> int:
    """A transformers model's parameter -> 0: the embeddings (or a speech model's feature encoder); i + 1: block i
    (`...layer.<i>.` or `...layers.<i>.`, every BERT-, ViT- and wav2vec-like model); past the blocks: last."""
    found = re.search(r"\blayers?\.(\d+)\.", name)
    return int(found.group(1)) + 1 if found else 0 if any(s in name for s in STEM) else 10_000


def set_trainable_layers(model: nn.Module, freeze, lr_scale: float, layer_decay: float | None):
    """set_trainable over layer_group's groups, numbered 0.. in order."""
    groups = {n: layer_group(n) for n, _ in model.named_parameters()}
    ranks = {g: i for i, g in enumerate(sorted(set(groups.values())))}
    set_trainable(model, lambda n: ranks[groups[n]], freeze, lr_scale, layer_decay)


def per_channel(v, channels: int) -> torch.Tensor:
    """A statistic [channels]: as given, or (another length: an RGB model's for gray images) its mean repeated."""
    v = torch.as_tensor(v, dtype=torch.float32).flatten()
    return v if len(v) == channels else v.mean().expand(channels)


def renormalise(mean_from, std_from, mean_to, std_to, channels: int, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) [1 c 1 ..] (ndim dimensions) with x * scale + shift mapping inputs standardised with
    (mean_from, std_from) to (mean_to, std_to): a backbone's own statistics (`per_channel`)."""
    m0, s0, m1, s1 = (per_channel(v, channels).reshape(1, channels, *[1] * (ndim - 2))
                      for v in (mean_from, std_from, mean_to, std_to))
    return (s0 / s1).clone(), ((m0 - m1) / s1).clone()
