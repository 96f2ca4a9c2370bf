"""A small 1-D CNN over the sensor domain's model input [b c t]: a convolutional baseline beside the patch transformer
(no tokens, so masked objectives refuse it)."""
import torch
from torch import nn

from multissl.errors import UserError


class Conv1dEncoder(nn.Module):
    """Conv1d-BN-ReLU blocks of `widths` channels (each halving the time axis), a last one to `dim` channels, then the
    mean over time -> [b dim]."""
    domains = ("sensors",)  # it reads [b c t] windows, the sensor domain's model input

    def __init__(self, domain, dim: int = 64, widths=(32, 64), kernel: int = 5):
        super().__init__()
        self.dim = dim
        layers, c_in = [], domain.channels
        for c_out, stride in [*((w, 2) for w in widths), (dim, 1)]:
            layers += [nn.Conv1d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm1d(c_out),
                       nn.ReLU(inplace=True)]
            c_in = c_out
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        if keep is not None or pad is not None:
            raise UserError("encoder=conv1d has no tokens to mask or pad; use encoder=transformer")
        return None, self.net(x).mean(2)  # no tokens, pooled [b dim]
