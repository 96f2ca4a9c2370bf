"""MLP projector / predictor builder: one function, the widths as a list."""
from torch import nn


def mlp(dims: list[int], norm: str = "bn", last_norm: bool = False) -> nn.Sequential:
    """Linear-(BN)-ReLU blocks between consecutive `dims`; the last layer is plain Linear unless
    `last_norm` (norm: "bn" or "none")."""
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=(norm == "none") or (last and not last_norm)))
        if not last or last_norm:
            if norm == "bn":
                layers.append(nn.BatchNorm1d(d_out))
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)
