"""The Nature-CNN encoder (`encoder=nature_cnn`) for the rl domain's frames."""
import torch
from torch import nn

from multissl.errors import UserError


class NatureCNN(nn.Module):
    """The DQN encoder (Mnih et al. 2015): conv 32x8/4, 64x4/2, 64x3/1, ReLU, then Linear to `dim` + ReLU.
    Any frame size of at least 36 x 36; not a token model, so masked objectives refuse it."""
    supports_masking = False
    domains = ("rl",)
    base_lr = 1.0e-4  # the default 3e-3 suits the tiny transformer; this CNN loses the state's velocities at 5e-4

    def __init__(self, domain, dim: int = 512):
        super().__init__()
        if domain.is_vector:
            raise UserError(f"encoder=nature_cnn reads frames, but the buffer holds state vectors "
                            f"{domain.obs_shape}; use encoder=mlp")
        (h, w), c = domain.frame_hw, domain.channels
        if min(h, w) < 36:
            raise UserError(f"encoder=nature_cnn needs frames of at least 36x36, got {h}x{w}; set "
                            f"domain.frame_size=[84,84] or use encoder=transformer")
        self.dim = dim
        self.conv = nn.Sequential(nn.Conv2d(c, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                                  nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            n = self.conv(torch.zeros(1, c, h, w)).shape[1]
        self.fc = nn.Sequential(nn.Linear(n, dim), nn.ReLU())

    def forward(self, x, keep=None, pad=None):
        if keep is not None or pad is not None:
            raise UserError("encoder=nature_cnn has no tokens to mask or pad; use encoder=transformer")
        return None, self.fc(self.conv(x))  # [b c h w] -> pooled [b dim]
