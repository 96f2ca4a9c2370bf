"""`encoder=convnet`: a small convolutional encoder for images [b c h w] and clips [b c t h w], the few-block ConvNet
of few-shot and small-image SSL (Conv-4 of Vinyals et al. 2016; SimCLR and BYOL ablations on small images): each of
`widths` blocks is conv 3x3, BatchNorm, ReLU, then a 2x2 max-pool while the side is above 1. On clips each block is a
(2+1)-D one (Tran et al. 2018): the spatial 1x3x3 conv, then a temporal 3x1x1 conv over the frames, whose count is
kept. Global average pooling gives the representation; no tokens, so masked objectives refuse it. On clips every
block runs at the clip's frame count, so a step costs far more than the tubelet transformer's on a CPU."""
import torch
from torch import nn

from multissl.errors import UserError


def block(c_in: int, c_out: int, clips: bool) -> list[nn.Module]:
    if not clips:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return [nn.Conv3d(c_in, c_out, (1, 3, 3), padding=(0, 1, 1), bias=False), nn.BatchNorm3d(c_out),
            nn.ReLU(inplace=True), nn.Conv3d(c_out, c_out, (3, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]


class ConvNet(nn.Module):
    supports_masking = False
    domains = ("image", "video")

    def __init__(self, domain, widths: tuple = (32, 64, 128, 256)):
        super().__init__()
        self.clips = getattr(domain, "frames", None) is not None  # the video domain's clips: [b c t h w]
        side = getattr(domain, "image_size", None) or getattr(domain, "size", None) or 1
        layers, c = [], domain.channels
        for w in widths:
            layers += block(c, w, self.clips)
            if side > 1:  # halve the side while there is one to halve (frames are kept)
                layers.append(nn.MaxPool3d((1, 2, 2)) if self.clips else nn.MaxPool2d(2))
                side //= 2
            c = w
        self.net, self.dim = nn.Sequential(*layers), c

    def forward(self, x: torch.Tensor, keep=None, pad=None):
        """x [b c h w] or [b c t h w] -> (None: no tokens, pooled [b dim])."""
        if keep is not None or pad is not None:
            raise UserError("encoder=convnet has no tokens to mask or pad; use encoder=transformer")
        return None, self.net(x).flatten(2).mean(2)
