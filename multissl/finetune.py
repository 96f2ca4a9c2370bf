"""Continued pretraining of a loaded backbone (encoder=timm, encoder=hf): its layer groups frozen or run at a lower
learning rate. A group is an int per parameter, 0 for the stem or embeddings, then one per block in order; the
engine reads the `lr_scale` each parameter carries (multissl.optim.param_groups)."""
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
