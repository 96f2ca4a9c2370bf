"""encoder=resnet18: a convolutional baseline for the image domain."""
from torch import nn

from multissl.errors import UserError


class ResNet(nn.Module):
    """torchvision ResNet-18 adapted for small images (3x3 stem, no max-pool, as in SimCLR's CIFAR
    variant). Not a token model: masked objectives refuse it."""
    supports_masking = False
    domains = ("image",)  # a 2-D CNN over [c h w] images

    def __init__(self, domain, depth: int = 18):
        import torchvision  # here: importing it takes longer than most runs' first step
        super().__init__()
        net = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34,
               50: torchvision.models.resnet50}[depth](weights=None)
        net.conv1 = nn.Conv2d(domain.channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
        self.dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x, keep=None, pad=None):
        if keep is not None or pad is not None:
            raise UserError("encoder=resnet18 has no tokens to mask or pad; use encoder=transformer")
        return None, self.net(x)
