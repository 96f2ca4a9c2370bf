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
def resize_matrix(start: torch.Tensor, length: torch.Tensor, out: int, size: int, dtype=torch.float32):
    """Antialiased linear resampling of the windows [start, start + length) (integers [m]) of an axis of `size`
    samples to `out` samples, as matrices [m out size] (rows sum to 1): torch's antialias=True triangle filter,
    widened by the scale when shrinking, over the window alone."""
    length = length.to(dtype)
    scale = (length / out)[:, None, None]  # [m 1 1] input samples per output sample
    j = torch.arange(size, device=start.device, dtype=dtype)[None, None] - start.to(dtype)[:, None, None]  # [m 1 n]
    inside = (j >= 0) & (j < length[:, None, None])
    centre = scale * (torch.arange(out, device=start.device, dtype=dtype)[None, :, None] + 0.5)  # [m out 1]
    w = (1 - ((j + 0.5 - centre) / scale.clamp_min(1.0)).abs()).clamp_min(0) * inside
    return w / w.sum(-1, keepdim=True)


def grid_positions(start, length, out: int, size: int, dtype):
    """[m out] grid_sample coordinates (align_corners=False) of the bilinear resize of each window [start,
    start + length) of an axis of `size` samples: torch's sample positions, clamped to the window so that its
    edge samples repeat (the window resized on its own, as F.interpolate does)."""
    pos = (torch.arange(out, device=start.device, dtype=dtype)[None] + 0.5) * (length.to(dtype) / out)[:, None] - 0.5
    pos = pos.clamp(min=0).minimum(length.to(dtype)[:, None] - 1) + start.to(dtype)[:, None]
    return (2 * pos + 1) / size - 1


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """x [b c h w], boxes [b v 4] (top, left, height, width) -> [b v c size size]: each box resized as
    torchvision's resized_crop(antialias=True) does. Crops that are enlarged (global views, most local ones)
    take one grid_sample at the clamped bilinear positions; a batch where some crop shrinks takes the
    antialiasing resampling matrices (two products per sample, exact but dense)."""
    b, v = boxes.shape[:2]
    top, left, height, width = boxes.reshape(b * v, 4).long().unbind(-1)
    h, w = x.shape[-2:]
    if bool((height > size).any() or (width > size).any()):
        rows = resize_matrix(top, height, size, h, dtype=x.dtype).view(b, v, size, -1)  # [b v s h]
        cols = resize_matrix(left, width, size, w, dtype=x.dtype).view(b, v, size, -1)  # [b v s w]
        return torch.einsum("bvsh,bchw,bvtw->bvcst", rows, x, cols)
    gy, gx = grid_positions(top, height, size, h, x.dtype), grid_positions(left, width, size, w, x.dtype)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)  # [(b v) s s 2]: (x, y)
    grid = grid.view(b, v * size, size, 2)  # a sample's views stacked along the height: one pass over x
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # [b c (v s) s]
    return out.view(b, x.shape[1], v, size, size).transpose(1, 2)  # views of one tensor, no copy


def where_samples(pick: torch.Tensor, x: torch.Tensor, op) -> torch.Tensor:
    """x [b ...] with op applied to the samples where pick [b] is True (op(x[picked]) -> their new values); the
    others are left as they are, and no work is done for them."""
    idx = pick.nonzero()[:, 0]
    if len(idx) == 0:
        return x
    if len(idx) == len(x):
        return op(x, idx)
    return x.index_copy(0, idx, op(x.index_select(0, idx), idx))


LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601 luma weights of R, G, B (torchvision's)


def _gray(x):  # [b c h w] -> [b 1 h w]
    if x.shape[1] == 1:
        return x
    g = torch.addcmul(x[:, 0] * LUMA[0], x[:, 1], x.new_tensor(LUMA[1]))
    return torch.addcmul(g, x[:, 2], x.new_tensor(LUMA[2])).unsqueeze(1)


def _mean_gray(x):  # [b c h w] -> [b 1 1 1]: the mean luma, from the channel means
    m = x.mean((2, 3))  # [b c]
    return (m @ m.new_tensor(LUMA) if x.shape[1] == 3 else m[:, 0]).view(-1, 1, 1, 1)


def _blend(x, other, f):  # f [b]: f x + (1 - f) other, clamped
    return torch.lerp(other.expand_as(x), x, f.view(-1, 1, 1, 1)).clamp_(0, 1)


def _hue(x, shift):
    """x [b 3 h w] RGB, shift [b] in turns -> the hue rotated: torchvision's HSV round trip, in closed form. Value
    (max) and chroma (max - min) are kept; only the hue h (in sextants, [0, 6)) moves."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)  # [b h w]
    chroma = maxc - minc
    c = torch.where(chroma == 0, 1.0, chroma)  # grey pixels: any hue, no chroma to give it
    h = torch.where(maxc == r, g - b, torch.where(maxc == g, (b - r).add_(c, alpha=2), (r - g).add_(c, alpha=4)))
    h6 = h.div_(c).add_(6 * shift.view(-1, 1, 1) + 6).remainder_(6.0)  # rotated hue
    # HSV -> RGB: channel n (R 5, G 3, B 1) is max - chroma clamp(min(k, 4 - k), 0, 1), k = (n + h) mod 6
    out = torch.empty_like(x)
    for ch, n in enumerate((5.0, 3.0, 1.0)):
        k = (h6 + n).remainder_(6.0)
        torch.addcmul(maxc, chroma, torch.minimum(k, 4 - k).clamp_(0, 1), value=-1, out=out[:, ch])
    return out


def _colour_op(x, op: int, f):
    if op == BRIGHTNESS:
        return (x * f.view(-1, 1, 1, 1)).clamp_(0, 1)
    if op == CONTRAST:
        return _blend(x, _mean_gray(x), f)
    if op == SATURATION:
        return _blend(x, _gray(x), f)
    return _hue(x, f)


def color_jitter(x: torch.Tensor, order: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """x [b c h w], order [b 4] (the ops in each sample's order), factors [b 4] -> jittered x. Each step runs
    an op only on the samples whose turn it is (the others keep their values exactly)."""
    n_ops, factors, x = 4 if x.shape[1] == 3 else 2, factors.to(x.dtype), x.clone()
    for j in range(n_ops):
        for op in range(n_ops):
            turn = ((order[:, j] == op) & (factors[:, op] != IDENTITY[op])).nonzero()[:, 0]
            if len(turn) == len(x):
                x = _colour_op(x, op, factors[:, op])
            elif len(turn):
                x.index_copy_(0, turn, _colour_op(x.index_select(0, turn), op, factors[turn, op]))
    return x


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x [b c h w], sigma [b] (0 = none) -> each sample blurred with its own kernel (torchvision's size rule:
    2 ceil(2 sigma) + 1, at least 3, at most the image) and reflect padding, in one grouped convolution."""
    blurred = sigma > 0
    if not blurred.any():
        return x
    if not blurred.all():  # only the blurred samples are convolved
        return where_samples(blurred, x, lambda t, i: gaussian_blur(t, sigma[i]))
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
