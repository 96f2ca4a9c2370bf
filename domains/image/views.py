"""Image views in two halves: per-sample draws in the loader workers (a crop box, flip, colour-jitter order and
factors, grayscale and blur sigma per view) and a batched apply on the device that crops and resizes, flips,
jitters, grays and blurs every view of a batch at once."""
import torch

from .. import augment as A


def draw_views(x: torch.Tensor, rng: torch.Generator, scales: list, n_global: int, *, ratio: tuple, flip: float,
               jitter: float, jitter_p: float, grayscale: float, blur: float, blur_sigma: tuple) -> dict:
    """x uint8 [c h w] -> the sample and, per view (a crop of scales[v] of the area; the views after the first
    n_global are local), its crop box, flip, colour-jitter order and factors, grayscale and blur sigma."""
    h, w = x.shape[-2:]
    box, flips, order, factor, gray, sigma = [], [], [], [], [], []
    for scale in scales:  # per view, in the order the per-sample augmentations drew them
        box.append(A.crop_box(h, w, scale, ratio, rng))
        flips.append(A.coin(rng, flip))
        o, f = A.jitter_draw(jitter, rng, jitter_p, x.shape[0])
        order.append(o)
        factor.append(f)
        gray.append(x.shape[0] == 3 and A.coin(rng, grayscale))
        sigma.append(A.blur_draw(blur_sigma, rng, blur))
    return {"image": x, "box": torch.tensor(box, dtype=torch.float32), "flip": torch.tensor(flips),
            "order": torch.tensor(order), "factor": torch.tensor(factor), "gray": torch.tensor(gray),
            "sigma": torch.tensor(sigma), "local": torch.arange(len(scales)) >= n_global}


def apply_views(d: dict, size: int, local_size: int, normalize) -> list[torch.Tensor]:
    """draw's tensors for a batch [b ...], on any device -> the views (global [b c size size], then local
    [b c local_size local_size]), each normalized by `normalize` (float [b c s s] in [0, 1] -> model input)."""
    x = d["image"].float() / 255  # [b c h w]
    n_global = int((~d["local"][0]).sum())
    views = []
    for part, s in ((slice(0, n_global), size), (slice(n_global, None), local_size)):
        if d["box"][:, part].shape[1] == 0:
            continue
        crops = A.resized_crops(x, d["box"][:, part], s)  # [b v c s s]
        for i in range(crops.shape[1]):
            j = part.start + i
            views.append(normalize(finish(crops[:, i], d["flip"][:, j], d["order"][:, j], d["factor"][:, j],
                                          d["gray"][:, j], d["sigma"][:, j])))
    return views


def finish(x, flip, order, factor, gray, sigma) -> torch.Tensor:
    """One view of a batch after its crop, x [b c s s] in [0, 1] with its draws [b ...]: flip, colour jitter,
    grayscale (colour images only), blur."""
    x = A.where_samples(flip, x, lambda t, i: t.flip(-1))
    x = A.color_jitter(x, order, factor)
    if x.shape[1] == 3:
        x = A.where_samples(gray, x, lambda t, i: t.mean(1, keepdim=True).expand_as(t))
    return A.gaussian_blur(x, sigma)
