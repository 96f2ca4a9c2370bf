"""`encoder=r3d18`: torchvision's 3-D ResNet-18 (Tran et al. 2018, `video.r3d_18`, no weights) as a convolutional
baseline for clips; not a token model, so masked objectives refuse it."""
import torch
from torch import nn

from multissl.errors import UserError


class R3D18(nn.Module):
    """[b c t s s] -> pooled [b 512]: the stem takes the data's channel count (1 for grayscale clips), the classifier
    is dropped; global average pooling over time and space is the representation."""
    supports_masking = False
    domains = ("video",)

    def __init__(self, domain):
        super().__init__()
        from torchvision.models.video import r3d_18
        net = r3d_18(weights=None)
        if domain.channels != 3:
            net.stem[0] = nn.Conv3d(domain.channels, 64, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False)
        net.fc = nn.Identity()
        self.net, self.dim = net, 512

    def forward(self, x: torch.Tensor, keep=None, pad=None):
        if keep is not None or pad is not None:
            raise UserError("encoder=r3d18 has no tokens to mask or pad; use encoder=transformer")
        return None, self.net(x)  # no tokens, pooled [b 512]
