"""Augmentations for [c h w] float tensors in [0, 1], every random draw taken from the generator the
engine passes (torchvision's transforms draw from the global RNG, which would break reproducibility
and process-count invariance)."""
import math

import torch
import torchvision.transforms.v2.functional as TF


def uniform(rng: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=rng).item()


def coin(rng: torch.Generator, p: float) -> bool:
    return p > 0 and torch.rand((), generator=rng).item() < p


def random_resized_crop(x, size: tuple[int, int], scale, ratio, rng):
    """Inception-style crop of `scale` area fraction and `ratio` aspect, resized to `size`."""
    h, w = x.shape[-2:]
    for _ in range(10):
        area = h * w * uniform(rng, *scale)
        r = math.exp(uniform(rng, math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * r)), round(math.sqrt(area / r))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (), generator=rng))
            left = int(torch.randint(0, w - cw + 1, (), generator=rng))
            return TF.resized_crop(x, top, left, ch, cw, list(size), antialias=True)
    return TF.resize(x, list(size), antialias=True)  # fallback: whole image


def color_jitter(x, strength: float, rng, p: float = 0.8):
    """SimCLR colour distortion (brightness, contrast, saturation, hue) in a random order."""
    if not coin(rng, p):
        return x
    s = strength
    ops = [
        lambda t: TF.adjust_brightness(t, uniform(rng, 1 - 0.8 * s, 1 + 0.8 * s)),
        lambda t: TF.adjust_contrast(t, uniform(rng, 1 - 0.8 * s, 1 + 0.8 * s)),
    ]
    if x.shape[0] == 3:
        ops += [
            lambda t: TF.adjust_saturation(t, uniform(rng, 1 - 0.8 * s, 1 + 0.8 * s)),
            lambda t: TF.adjust_hue(t, uniform(rng, -0.2 * s, 0.2 * s)),
        ]
    for i in torch.randperm(len(ops), generator=rng).tolist():
        x = ops[i](x).clamp(0, 1)
    return x


def gaussian_blur(x, sigma, rng, p: float):
    if not coin(rng, p):
        return x
    s = uniform(rng, *sigma)
    k = max(3, 2 * math.ceil(2 * s) + 1)
    k = min(k, 2 * (min(x.shape[-2:]) // 2) - 1) if min(x.shape[-2:]) < k else k
    return TF.gaussian_blur(x, [k, k], [s, s]) if k >= 3 else x
