"""Patch tokens for grids of any rank, shared by every grid-shaped domain: 1-D sequences [c n], 2-D images and
spectrograms [c h w], 3-D video [c t h w] (tubelets). The embedding with learned or sine-cosine positions, the
masked-modeling target in the same token order, and its loss."""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from multissl.dist import global_mean
from multissl.encoder import gather_tokens

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
RESIZE = {1: "linear", 2: "bicubic", 3: "trilinear"}


def axis_pairs(dim: int, n_axes: int) -> list[int]:
    """Sine-cosine pairs per axis: dim / 2 pairs shared out as evenly as possible, the first axes first."""
    pairs = dim // 2
    return [pairs // n_axes + (a < pairs % n_axes) for a in range(n_axes)]


def sincos(dim: int, grid: tuple[int, ...]) -> torch.Tensor:
    """Fixed sine-cosine positions [1 dim *grid] (MAE): each axis gets its share of the channels (`axis_pairs`),
    sines then cosines of position / 10000^(i / pairs), so position is readable from the first step and defined
    for any grid size. 2-D with dim divisible by 4 is MAE's 2-D table exactly."""
    if dim % 2:
        raise ValueError(f"sincos positions need an even encoder.dim, got {dim}")
    parts = []
    for a, (n, q) in enumerate(zip(grid, axis_pairs(dim, len(grid)))):
        freq = 1.0 / 10000 ** (torch.arange(q) / q)  # [q]
        angle = torch.arange(n, dtype=torch.float32)[None] * freq[:, None]  # [q n]
        enc = torch.cat([angle.sin(), angle.cos()])  # [2q n]
        shape = [2 * q] + [n if b == a else 1 for b in range(len(grid))]
        parts.append(enc.view(shape).expand(2 * q, *grid))
    return torch.cat(parts)[None]


def sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """[1 dim rows cols]: `sincos` on a 2-D grid."""
    return sincos(dim, (rows, cols))


def positions(table: torch.Tensor | None, t: torch.Tensor, fit: str = "interpolate") -> torch.Tensor:
    """Positions [1 d *grid] for tokens t [b d *grid] (on t's device, in its dtype): fixed sine-cosine ones when
    `table` is None, else the learned table [1 d *grid'], which another grid gets by `fit`: "interpolate"
    (resized: local crops of an image) or "crop" (its leading part: a shorter sequence, whose position i is
    still position i)."""
    grid = tuple(t.shape[2:])
    if table is None:
        return sincos(t.shape[1], grid).to(t)
    if tuple(table.shape[2:]) == grid:
        return table
    if fit == "crop":
        if any(g > n for g, n in zip(grid, table.shape[2:])):
            raise ValueError(f"a token grid of {list(grid)} is larger than the position table {list(table.shape[2:])}")
        return table[(slice(None), slice(None), *(slice(g) for g in grid))]
    return F.interpolate(table, size=grid, mode=RESIZE[len(grid)], align_corners=False)


class PatchEmbed(nn.Module):
    """[b c *size] -> [b n d] tokens, row-major over the grid of size / patch (the last axis fastest), plus
    positions: a learned table (`pos="learned"`, fitted to other grids by `fit`, see `positions`) or fixed
    sine-cosine ones. 1-D, 2-D or 3-D: a Conv1d/2d/3d with kernel = patch and stride = patch, or `stride` for
    overlapping patches (a waveform's frames)."""

    def __init__(self, channels: int, size: tuple[int, ...], patch: tuple[int, ...], dim: int, pos: str = "learned",
                 fit: str = "interpolate", stride: tuple[int, ...] | None = None):
        super().__init__()
        if len(size) != len(patch) or len(size) not in CONV:
            raise ValueError(f"a 1-, 2- or 3-D grid needs one patch side per axis, got size {size} and patch {patch}")
        if pos not in ("learned", "sincos"):
            raise ValueError(f"positions must be learned or sincos, got {pos!r}")
        if fit not in ("interpolate", "crop"):
            raise ValueError(f"positions fit must be interpolate or crop, got {fit!r}")
        self.patch, self.fit = tuple(int(p) for p in patch), fit
        step = tuple(int(s) for s in stride) if stride else self.patch
        self.grid = tuple((s - p) // t + 1 for s, p, t in zip(size, self.patch, step))
        self.proj = CONV[len(size)](channels, dim, self.patch, step)
        self.pos = nn.Parameter(torch.randn(1, dim, *self.grid) * 0.02) if pos == "learned" else None

    def forward(self, x):
        t = self.proj(x)  # [b d *grid]
        return rearrange(t + positions(self.pos, t, self.fit), "b d ... -> b (...) d")  # [b n d]


def _axes(n: int) -> tuple[list[str], list[str]]:
    """Names of n grid axes and of their patch sides, for einops patterns."""
    return [f"g{i}" for i in range(n)], [f"p{i}" for i in range(n)]


def patchify(x: torch.Tensor, patch: tuple[int, ...], normalize: bool) -> torch.Tensor:
    """[b c *size] -> [b n (*patch c)] in PatchEmbed's token order; `normalize` standardizes each patch (MAE's
    norm_pix_loss), so the loss is about structure, not brightness or loudness. 2-D: b c (g0 p0) (g1 p1) ->
    b (g0 g1) (p0 p1 c)."""
    g, p = _axes(len(patch))
    src = " ".join(f"({a} {q})" for a, q in zip(g, p))
    t = rearrange(x, f"b c {src} -> b ({' '.join(g)}) ({' '.join(p)} c)", **dict(zip(p, patch)))
    if normalize:
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    return t


def unpatchify(t: torch.Tensor, patch: tuple[int, ...], grid: tuple[int, ...]) -> torch.Tensor:
    """The inverse of patchify (unnormalized): [b n (*patch c)] -> [b c *size], e.g. to look at reconstructions."""
    g, p = _axes(len(patch))
    dst = " ".join(f"({a} {q})" for a, q in zip(g, p))
    return rearrange(t, f"b ({' '.join(g)}) ({' '.join(p)} c) -> b c {dst}", **dict(zip(g, grid)),
                     **dict(zip(p, patch)))


def masked_mse(pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """pred and target [b n t]; MSE over the masked tokens `masked` [b m] only (-1 entries, the padding of a
    variable-length batch, are not scored)."""
    err = (gather_tokens(pred, masked) - gather_tokens(target, masked)).pow(2)  # [b m t]
    real = (masked >= 0).unsqueeze(-1).to(err.dtype)
    return global_mean((err * real).sum(), real.sum() * err.shape[-1])  # over every process's masked tokens
