"""Clips -> model input: the stride a video is sampled at, per-channel statistics and the standardization to
[b c t s s], and `preprocess` for clips as users have them (any layout, length and size, or a list of clips)."""
import numpy as np
import torch

from multissl.errors import UserError

from .views import centre_window


def stride_for(clips, i: int, target_fps: float | None, stride: int) -> int:
    """domain.stride, or the stride that samples video i of `clips` at domain.fps frames per second."""
    fps = clips.fps(i) if target_fps else None
    return max(1, round(fps / target_fps)) if fps else stride


def channel_stats(x: torch.Tensor) -> tuple[list, list]:
    """Clips float [n t c s s] in [0, 1] -> per-channel (mean, std) as lists."""
    return x.mean((0, 1, 3, 4)).tolist(), x.std((0, 1, 3, 4)).clamp_min(1e-3).tolist()


def standardize(x: torch.Tensor, mean: list, std: list) -> torch.Tensor:
    """float [b t c s s] in [0, 1] -> the model input [b c t s s], standardized per channel."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return ((x - m) / s).transpose(1, 2)


def preprocess(raw, channels: int, frames: int, stride: int, size: int, mean: list, std: list) -> torch.Tensor:
    """Clips uint8 [b t c h w] or [b t h w c] (or float in [0, 1]) of any length and size, or a list of clips
    [t c h w] / [t h w c] each of its own -> the model input [b c t s s]: the middle `frames` (every `stride`;
    a shorter clip spread evenly), resized and centre-cropped to size x size."""
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise UserError("no clips to embed: pass a batch [batch, frames, channels, height, width] or a list "
                            "of clips")
        return torch.cat([preprocess(torch.as_tensor(np.asarray(c))[None], channels, frames, stride, size, mean, std)
                          for c in raw])
    x = torch.as_tensor(np.asarray(raw)) if not torch.is_tensor(raw) else raw
    if x.ndim == 4 and channels == 1:
        x = x[:, :, None]
    if x.ndim != 5:
        raise UserError(f"a video batch is [batch, frames, channels, height, width] (or channels last), got "
                        f"shape {tuple(x.shape)}")
    if x.shape[2] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 1, 4, 2, 3)  # channels last -> [b t c h w]
    if x.shape[2] != channels:
        raise UserError(f"clips have {x.shape[2]} channels but the encoder was trained on {channels}")
    x = x[:, centre_window(x.shape[1], frames, stride)]
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if x.shape[-2:] != (size, size):
        import torchvision.transforms.v2.functional as TF
        b, t = x.shape[:2]
        x = TF.center_crop(TF.resize(x.flatten(0, 1), size, antialias=True), [size] * 2)
        x = x.view(b, t, *x.shape[1:])
    return standardize(x, mean, std)
