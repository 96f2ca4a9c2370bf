"""Images -> the model input and its patch grid: the patch size chosen when unset (`auto_patch`), normalization
with the training statistics, and a user's batch brought to the run's channels and size (`as_images`)."""
import numpy as np
import torch

from multissl.errors import UserError


def auto_patch(size: int, max_side: int = 8) -> int:
    """The patch for size x size images when domain.patch_size is unset: the smallest divisor of `size` (at least
    2) that leaves at most max_side x max_side tokens, a count the default encoder handles well (digits 8 -> 2:
    16 tokens; 32 -> 4; 224 -> 28: 64 tokens). Sizes with no such divisor below them take the whole image."""
    if size <= max_side:
        return 2 if size % 2 == 0 and size > 2 else 1
    return next(p for p in range(2, size + 1) if size % p == 0 and size // p <= max_side)


def normalize(x: torch.Tensor, mean: list, std: list) -> torch.Tensor:
    """float [.. c h w] in [0, 1] -> each channel standardized with the training statistics."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def as_images(raw, channels: int, size: int) -> torch.Tensor:
    """A user's batch (uint8 0..255 or float 0..1, [b c h w] or [b h w]) -> float [b channels size size] in [0, 1]:
    colour to luma for a grayscale run, other sizes resized (shorter side) and centre-cropped."""
    x = torch.as_tensor(np.asarray(raw)) if not torch.is_tensor(raw) else raw
    if x.ndim == 3 and channels == 1:
        x = x[:, None]
    if x.ndim != 4:
        raise UserError(f"image batch must be [batch, channels, height, width], got shape {tuple(x.shape)}")
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if x.shape[1] == 3 and channels == 1:  # ITU-R 601 luma, as PIL's convert("L")
        x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    if x.shape[1] != channels:
        raise UserError(f"images have {x.shape[1]} channels but the encoder was trained on "
                        f"{channels}; convert them (e.g. PIL .convert('RGB'/'L'))")
    if x.shape[-2:] != (size, size):
        import torchvision.transforms.v2.functional as TF
        x = TF.center_crop(TF.resize(x, size, antialias=True), [size] * 2)
    return x
