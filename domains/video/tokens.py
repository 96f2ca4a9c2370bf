"""Tubelet tokens: the tubelet (3-D patch) size with its unset sides derived from the clips, the token grid, and
the masks over it — VideoMAE's tubes (`views.tube_mask`) or random space-time tokens."""
import sys

import torch

from multissl.errors import UserError

from ..image import auto_patch
from ..masking import random_mask
from .views import tube_mask

MASKS = ("tube", "random")


def tubelet_of(cfg, frames: int, size: int) -> list[int]:
    """domain.tubelet [t h w], its unset (null) sides derived: t = 2 (VideoMAE's), h = w = the smallest divisor of
    the size that leaves at most 4 x 4 patches per frame (CPU-sized; VideoMAE's 16 covers 224 px with 14 x 14).
    Says what it chose on stderr."""
    t, h, w = (list(cfg) if cfg else [None, None, None])
    p = auto_patch(size, max_side=4)
    t, h, w = t or min(2, frames), h or p, w or p
    if frames % t or size % h or size % w:
        raise UserError(f"domain.tubelet=[{t}, {h}, {w}] does not divide clips of {frames} frames of "
                        f"{size} x {size}; pick sides that divide them")
    print(f"multissl: domain.tubelet=[{t}, {h}, {w}]: clips of {frames} x {size} x {size} -> "
          f"{frames // t} x {size // h} x {size // w} tokens (set domain.tubelet to choose)", file=sys.stderr)
    return [t, h, w]


def grid_of(tubelet: list[int], frames: int, size: int) -> tuple[int, int, int]:
    """Tokens along time, height and width."""
    t, h, w = tubelet
    return frames // t, size // h, size // w


def mask(mode: str, batch_size: int, grid: tuple[int, int, int], ratio: float, rng: torch.Generator):
    """-> (keep [b k], masked [b m]): tubes (mode "tube": one spatial mask repeated over time) or random tokens."""
    if mode == "tube":
        return tube_mask(batch_size, grid, ratio, rng)
    return random_mask(batch_size, grid[0] * grid[1] * grid[2], ratio, rng)
