"""Clip views in two halves, as for images: per-sample draws of which frames each view takes (temporal crops, clips
of one video at different times) and of its spatial parameters, and a batched apply that crops, flips and
colour-jitters every frame of a view identically, on the device. Masks: VideoMAE's tubes and random space-time."""
import torch

from .. import augment as A
from ..masking import split_indices


def window(n_stored: int, frames: int, stride: int, start: int) -> list[int]:
    """Frame indices of a clip of `frames` frames every `stride` from `start`; past the end the last frame repeats."""
    return [min(start + k * stride, n_stored - 1) for k in range(frames)]


def centre_window(n_stored: int, frames: int, stride: int) -> list[int]:
    """The evaluation clip: the window in the middle of the video; a video shorter than the window spreads the
    frames evenly over its length instead (repeating some)."""
    span = (frames - 1) * stride + 1
    if span > n_stored:
        return torch.linspace(0, n_stored - 1, frames).round().long().tolist()
    return window(n_stored, frames, stride, (n_stored - span) // 2)


def starts(n_stored: int, span: int, n_views: int, apart: int | None, rng: torch.Generator) -> list[int]:
    """Where each view's clip starts: the first uniformly in the video, the others uniformly in the video
    (apart None: clips anywhere, Feichtenhofer et al. 2021) or within `apart` frames of the first (0: the same
    time, so the views differ only spatially)."""
    last = max(n_stored - span, 0)
    first = int(torch.randint(0, last + 1, (), generator=rng))
    out = [first]
    for _ in range(n_views - 1):
        lo, hi = (0, last) if apart is None else (max(first - apart, 0), min(first + apart, last))
        out.append(int(torch.randint(lo, hi + 1, (), generator=rng)))
    return out


def temporal_crops(clips, i: int, n_stored: int, count: int, length: int, stride: int, apart: int | None,
                   rng: torch.Generator) -> torch.Tensor:
    """`count` clips of `length` frames every `stride` of video i of `clips` (n_stored frames long), started where
    `starts` draws -> uint8 [count length c s s], read in one call."""
    first = starts(n_stored, (length - 1) * stride + 1, count, apart, rng)
    f = clips.read(i, [k for s in first for k in window(n_stored, length, stride, s)])  # [(v t) c s s]
    return f.view(count, length, *f.shape[1:])


def spatial_draw(h: int, w: int, n_views: int, scale, ratio, flip: float, jitter: float, jitter_p: float,
                 channels: int, rng: torch.Generator) -> dict:
    """Per view: a crop box [4], a flip and colour-jitter order and factors [4], shared by all its frames."""
    box, flips, order, factor = [], [], [], []
    for _ in range(n_views):
        box.append(A.crop_box(h, w, scale, ratio, rng))
        flips.append(A.coin(rng, flip))
        o, f = A.jitter_draw(jitter, rng, jitter_p, channels)
        order.append(o)
        factor.append(f)
    return {"box": torch.tensor(box, dtype=torch.float32), "flip": torch.tensor(flips), "order": torch.tensor(order),
            "factor": torch.tensor(factor)}


def apply_spatial(clips: torch.Tensor, box, flip, order, factor, size: int) -> torch.Tensor:
    """clips uint8 [b v t c h w] with per-view box [b v 4], flip [b v], order / factor [b v 4] -> float [b v t c s s]
    in [0, 1]: every frame of a view cropped by its box (the frames folded into channels, so the crop is one
    resize), flipped and jittered alike."""
    b, v, t, c, h, w = clips.shape
    x = clips.reshape(b * v, t * c, h, w).float() / 255
    x = A.resized_crops(x, box.reshape(b * v, 1, 4), size)[:, 0]  # [(b v) (t c) s s]
    x = A.where_samples(flip.reshape(-1), x, lambda u, i: u.flip(-1))
    x = x.reshape(b * v * t, c, size, size)
    x = A.color_jitter(x, order.reshape(b * v, 4).repeat_interleave(t, 0), factor.reshape(b * v, 4).repeat_interleave(t, 0))
    return x.reshape(b, v, t, c, size, size)


def apply_groups(d: dict, sizes: dict[str, int]) -> list[torch.Tensor]:
    """Drawn tensors of a batch, per group of views ("global", "local": the frames `name` [b v t c h w] and
    `name_box`, `name_flip`, `name_order`, `name_factor`) -> every view, float [b t c s s] in [0, 1] at its
    group's size, in the order of `sizes`; a group not drawn is left out."""
    views = []
    for name, size in sizes.items():
        if name in d:
            x = apply_spatial(d[name], d[f"{name}_box"], d[f"{name}_flip"], d[f"{name}_order"],
                              d[f"{name}_factor"], size)  # [b v t c s s]
            views += [x[:, k] for k in range(x.shape[1])]
    return views


def tube_mask(batch_size: int, grid: tuple[int, int, int], ratio: float, rng: torch.Generator):
    """VideoMAE's tube masking on a [t h w] token grid: round(ratio h w) spatial positions masked in every frame
    (one spatial mask repeated over time, so a token cannot be copied from its neighbour in time); at least two
    positions kept (one where a frame has only two), so that on a small grid the encoder still relates places.
    -> (keep [b k], masked [b m]) in the patch embedding's token order (t, then h, then w)."""
    t, h, w = grid
    n = h * w
    n_mask = min(max(int(round(ratio * n)), 1), n - min(2, n - 1))
    spatial = torch.rand(batch_size, n, generator=rng).argsort(1) >= n - n_mask  # [b hw] True = masked
    scores = spatial.repeat(1, t).float()  # [b t*hw]: masked positions sort last
    return split_indices(scores, t * (n - n_mask))
