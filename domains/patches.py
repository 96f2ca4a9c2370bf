"""2-D patch tokens shared by every grid-shaped domain (images [c h w], spectrograms [1 mel time]):
the embedding, the masked-modeling target and its loss."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.encoder import gather_tokens


def sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions [1 dim rows cols] (MAE): half the channels encode the row, half
    the column, so position is readable from the first step and defined for any grid size."""
    if dim % 4:
        raise ValueError(f"sincos positions need encoder.dim divisible by 4, got {dim}")
    freq = 1.0 / 10000 ** (torch.arange(dim // 4) / (dim // 4))  # [dim/4]

    def enc(n):  # [dim/2 n]
        a = torch.arange(n, dtype=torch.float32)[None] * freq[:, None]
        return torch.cat([a.sin(), a.cos()])

    r, c = enc(rows), enc(cols)
    return torch.cat([r[:, :, None].expand(-1, -1, cols), c[:, None, :].expand(-1, rows, -1)])[None]


class PatchEmbed(nn.Module):
    """[b c h w] -> [b (h/ph)(w/pw) d] plus positions: a learned 2-D table (interpolated when the input
    grid differs, e.g. local crops) or fixed sine-cosine ones (computed for any grid)."""

    def __init__(self, channels: int, size: tuple[int, int], patch: tuple[int, int], dim: int,
                 pos: str = "learned"):
        super().__init__()
        if pos not in ("learned", "sincos"):
            raise ValueError(f"positions must be learned or sincos, got {pos!r}")
        self.patch, self.grid = tuple(patch), (size[0] // patch[0], size[1] // patch[1])
        self.proj = nn.Conv2d(channels, dim, self.patch, self.patch)
        self.pos = nn.Parameter(torch.randn(1, dim, *self.grid) * 0.02) if pos == "learned" else None

    def forward(self, x):
        t = self.proj(x)  # [b d gh gw]
        if self.pos is None:
            pos = sincos_2d(t.shape[1], *t.shape[-2:]).to(t)
        else:
            pos = self.pos
            if t.shape[-2:] != pos.shape[-2:]:
                pos = F.interpolate(pos, size=t.shape[-2:], mode="bicubic", align_corners=False)
        return (t + pos).flatten(2).transpose(1, 2)  # [b n d], row-major over the grid


def patchify(x: torch.Tensor, patch: tuple[int, int], normalize: bool) -> torch.Tensor:
    """[b c h w] -> [b n (ph pw c)] in PatchEmbed's token order; `normalize` standardizes each patch
    (MAE's norm_pix_loss), so the loss is about structure, not brightness or loudness."""
    ph, pw = patch
    t = x.unfold(2, ph, ph).unfold(3, pw, pw)  # [b c gh gw ph pw]
    t = t.permute(0, 2, 3, 4, 5, 1).flatten(1, 2).flatten(2)  # [b n (ph pw c)]
    if normalize:
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    return t


def masked_mse(pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """pred and target [b n t]; MSE over the masked tokens `masked` [b m] only."""
    return F.mse_loss(gather_tokens(pred, masked), gather_tokens(target, masked))
