"""Image augmentations in two halves: per-sample *draws* of random parameters (every draw from the generator
the engine passes; torchvision's transforms draw from the global RNG, which would break reproducibility and
process-count invariance) and batched, deterministic *applies* of them to [b c h w] float tensors in [0, 1] on
whatever device they are. A sample's result depends on its own parameters only, never on the batch."""
import math

import torch
import torch.nn.functional as F

# colour operations in the order their factors are stored; the identity factor of each
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
IDENTITY = (1.0, 1.0, 1.0, 0.0)


def uniform(rng: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=rng).item()


def coin(rng: torch.Generator, p: float) -> bool:
    return p > 0 and torch.rand((), generator=rng).item() < p


# ---- draws (one sample) ---------------------------------------------------------------------------------
def crop_box(h: int, w: int, scale, ratio, rng) -> list[float]:
    """Inception-style crop of `scale` area fraction and `ratio` aspect -> [top, left, height, width]; the
    whole image when ten tries do not fit."""
    for _ in range(10):
        area = h * w * uniform(rng, *scale)
        r = math.exp(uniform(rng, math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * r)), round(math.sqrt(area / r))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (), generator=rng))
            left = int(torch.randint(0, w - cw + 1, (), generator=rng))
            return [top, left, ch, cw]
    return [0, 0, h, w]


def jitter_draw(strength: float, rng, p: float, channels: int) -> tuple[list[int], list[float]]:
    """SimCLR colour distortion: (order [4], factors [4]). Applied with probability p, brightness and contrast
    (and for RGB saturation and hue) in a random order, each factor drawn when its turn comes; identity
    factors for the rest."""
    order, factors = list(range(4)), list(IDENTITY)
    if not coin(rng, p):
        return order, factors
    s, n_ops = strength, 4 if channels == 3 else 2
    perm = torch.randperm(n_ops, generator=rng).tolist()
    for i in perm:
        factors[i] = uniform(rng, -0.2 * s, 0.2 * s) if i == HUE else uniform(rng, 1 - 0.8 * s, 1 + 0.8 * s)
    return perm + order[n_ops:], factors


def blur_draw(sigma, rng, p: float) -> float:
    """A blur sigma, or 0 for no blur."""
    return uniform(rng, *sigma) if coin(rng, p) else 0.0


# ---- batched applies ------------------------------------------------------------------------------------
def resize_matrix(start: torch.Tensor, length: torch.Tensor, out: int, size: int, antialias: bool = True,
                  dtype=torch.float32) -> torch.Tensor:
    """Linear resampling of the windows [start, start + length) (integers [m]) of an axis of `size` samples to
    `out` samples, as matrices [m out size] (rows sum to 1): torch's bilinear interpolation with
    align_corners=False of the window alone (its edge samples repeat), antialiased when shrinking (the triangle
    filter widened by the scale, as torch's antialias=True). Window samples outside the axis read as 0."""
    length = length.to(dtype)
    scale = (length / out)[:, None, None]  # [m 1 1] input samples per output sample
    j = torch.arange(size, device=start.device, dtype=dtype)[None, None] - start.to(dtype)[:, None, None]  # [m 1 n]
    inside = (j >= 0) & (j < length[:, None, None])
    centre = scale * (torch.arange(out, device=start.device, dtype=dtype)[None, :, None] + 0.5)  # [m out 1]
    if antialias:
        support = scale.clamp_min(1.0)
        w = (1 - ((j + 0.5 - centre) / support).abs()).clamp_min(0) * inside
        return w / w.sum(-1, keepdim=True)
    src = (centre - 0.5).clamp(min=0).minimum(length[:, None, None] - 1)  # the window's edge samples repeat
    lo = src.floor()
    frac, hi = src - lo, (lo + 1).minimum(length[:, None, None] - 1)
    return (j == lo) * (1 - frac) + (j == hi) * frac  # zero at positions j outside the axis: padding reads 0


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """x [b c h w], boxes [b v 4] (top, left, height, width) -> [b v c size size]: each box resized as
    torchvision's resized_crop(antialias=True) does, as two matrix products per sample."""
    b, v = boxes.shape[:2]
    top, left, height, width = boxes.reshape(b * v, 4).long().unbind(-1)
    rows = resize_matrix(top, height, size, x.shape[-2], dtype=x.dtype).view(b, v, size, -1)  # [b v s h]
    cols = resize_matrix(left, width, size, x.shape[-1], dtype=x.dtype).view(b, v, size, -1)  # [b v s w]
    return torch.einsum("bvsh,bchw,bvtw->bvcst", rows, x, cols)


def _gray(x):  # [b c h w] -> [b 1 h w], ITU-R 601 luma for RGB (torchvision's weights)
    if x.shape[1] == 1:
        return x
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _blend(x, other, f):  # f [b]
    return (f.view(-1, 1, 1, 1) * x + (1 - f.view(-1, 1, 1, 1)) * other).clamp(0, 1)


def _hue(x, shift):
    """x [b 3 h w] RGB, shift [b] in turns -> the hue rotated (torchvision's HSV round trip)."""
    r, g, bl = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - bl) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = ((hr + hg + hb) / 6.0 + 1.0).fmod(1.0)
    h = (h + shift.view(-1, 1, 1)).remainder(1.0)
    v = maxc
    i = (h * 6.0).floor()
    f = h * 6.0 - i
    i = i.to(torch.int64).remainder(6)
    p, q, t = (v * (1 - s)).clamp(0, 1), (v * (1 - s * f)).clamp(0, 1), (v * (1 - s * (1 - f))).clamp(0, 1)
    table = torch.stack([torch.stack(c, 1) for c in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))],
                        1)  # [b 3 6 h w]: the channel value for each sextant
    return table.gather(2, i[:, None, None].expand(-1, 3, 1, -1, -1)).squeeze(2)


def _colour_op(x, op: int, f):
    if op == BRIGHTNESS:
        return (x * f.view(-1, 1, 1, 1)).clamp(0, 1)
    if op == CONTRAST:
        return _blend(x, _gray(x).mean((1, 2, 3), keepdim=True), f)
    if op == SATURATION:
        return _blend(x, _gray(x), f)
    return _hue(x, f)


def color_jitter(x: torch.Tensor, order: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """x [b c h w], order [b 4] (the ops in each sample's order), factors [b 4] -> jittered x. Each step runs
    an op only on the samples whose turn it is (the others keep their values exactly)."""
    n_ops = 4 if x.shape[1] == 3 else 2
    for j in range(n_ops):
        for op in range(n_ops):
            turn = (order[:, j] == op) & (factors[:, op] != IDENTITY[op])
            if turn.any():
                x = torch.where(turn.view(-1, 1, 1, 1), _colour_op(x, op, factors[:, op]), x)
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x [b c h w], sigma [b] (0 = none) -> each sample blurred with its own kernel (torchvision's size rule:
    2 ceil(2 sigma) + 1, at least 3, at most the image) and reflect padding, in one grouped convolution."""
    if not (sigma > 0).any():
        return x
    b, c, h, w = x.shape
    cap = 2 * (min(h, w) // 2) - 1  # the largest odd size reflect padding allows
    k = (2 * torch.ceil(2 * sigma) + 1).clamp(min=3, max=cap).long()
    k = torch.where(sigma > 0, k, torch.ones_like(k))  # 1 = the identity kernel
    size = int(k.max())
    pos = torch.arange(size, device=x.device, dtype=x.dtype) - size // 2  # [K]
    inside = pos.abs()[None] <= (k[:, None] - 1) / 2  # [b K]: each sample's own window
    kern = torch.exp(-0.5 * (pos[None] / sigma.clamp_min(1e-6)[:, None].to(x.dtype)) ** 2) * inside
    kern = torch.where((sigma > 0)[:, None], kern, (pos == 0).to(x.dtype)[None])
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [b*c K]
    y = F.pad(x.reshape(1, b * c, h, w), (size // 2,) * 4, mode="reflect")
    y = F.conv2d(y, kern[:, None, None, :], groups=b * c)  # along width
    y = F.conv2d(y, kern[:, None, :, None], groups=b * c)  # along height
    return y.view(b, c, h, w)
