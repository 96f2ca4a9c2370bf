"""Tokens of a frame observation: patches that run through the whole frame stack, their side chosen per frame side
unless domain.patch_size says, the token grid and the patch embedder. (State vectors give one token per feature
through `features.FeatureTokenizer`.)"""
from torch import nn

from multissl.errors import UserError

from ..patches import PatchEmbed


def sides(patch_size) -> tuple[int, int]:
    """domain.patch_size, one side or [h, w] -> (h, w)."""
    p = patch_size
    return (int(p), int(p)) if isinstance(p, (int, float)) else (int(p[0]), int(p[1]))


def auto_patch(hw: tuple[int, int]) -> tuple[int, int]:
    """The patch when domain.patch_size is unset: per frame side the divisor nearest to 12 pixels (ties: the
    larger one): the 48x72 default frames give 4 x 6 tokens, 84x84 Atari frames 7 x 7."""
    return tuple(min((d for d in range(1, s + 1) if s % d == 0), key=lambda d: (abs(d - 12), -d)) for s in hw)


def grid_of(hw: tuple[int, int], patch: tuple[int, int]) -> tuple[int, int]:
    """Patches per frame side."""
    (h, w), (ph, pw) = hw, patch
    return h // ph, w // pw


def patch_embedder(channels: int, hw: tuple[int, int], patch: tuple[int, int], dim: int, pos_embed: str) -> nn.Module:
    """Frames [b channels h w] -> patch tokens [b n dim], or a one-line UserError when the patch does not tile
    the frame."""
    (h, w), (ph, pw) = hw, patch
    if h % ph or w % pw:
        raise UserError(f"domain.patch_size={list(patch)} does not tile {h}x{w} frames; pick a patch that "
                        f"divides both sides, or set domain.frame_size")
    return PatchEmbed(channels, (h, w), (ph, pw), dim, pos_embed)
