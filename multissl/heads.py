"""MLP projector / predictor builder: one function, the widths as a list."""
from torch import nn


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear-BN-ReLU blocks between consecutive `dims`, then a plain Linear (with bias) to the last width."""
    layers = []
    for d_in, d_out in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)
