"""Stored observations -> model input, for every buffer layout (the table in domain.py): frames as float
[b c h w] in [0, 1] at the frame size, the training statistics and the standardization with them, and the
observation shape read from a buffer's header alone (so the encoder can be chosen before any data is loaded)."""
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from multissl.errors import UserError

from .buffer import detect_layout

# a batch as stored [b ...] -> [b c h w]: a frame stack's frames (and their colours) become channels
CHANNELS_FIRST = {"hw": lambda t: t[:, None], "hwc": lambda t: t.permute(0, 3, 1, 2), "chw": lambda t: t,
                  "khwc": lambda t: t.permute(0, 1, 4, 2, 3).flatten(1, 2)}


def channels(layout: str, obs_shape: list) -> int:
    """Channels of a frame observation once stacked frames and colours are folded together."""
    s = obs_shape
    return {"hw": 1, "hwc": s[-1], "chw": s[0], "khwc": s[0] * s[-1]}[layout]


def frame_hw(layout: str, obs_shape: list, frame_size: tuple | None) -> tuple[int, int]:
    """The frame size the model sees: domain.frame_size, else the stored one."""
    if frame_size:
        return frame_size
    s = obs_shape
    return tuple(s[1:3]) if layout in ("chw", "khwc") else tuple(s[:2])


def scaled(obs: torch.Tensor, layout: str, obs_dtype: str, hw: tuple[int, int] | None) -> torch.Tensor:
    """Stored observations [b ...] -> float [b c h w] in [0, 1] at `hw`, or float [b D] (vectors: no `hw`)."""
    x = obs.float()
    if layout == "vector":
        return x
    if obs_dtype == "uint8":
        x = x / 255
    x = CHANNELS_FIRST[layout](x)
    if tuple(x.shape[-2:]) != hw:
        import torchvision.transforms.v2.functional as TF
        x = TF.resize(x, list(hw), antialias=True)
    return x


def fit_stats(x: torch.Tensor, vector: bool, mode: str) -> tuple[list, list]:
    """Scaled training observations [n D] or [n c h w] -> (mean, std) as lists: per feature for vectors; for
    frames the mean frame [c h w] (mode "frame": a fixed camera's static background becomes 0, so what differs
    between observations is all the input holds) or the per-channel mean, then the per-channel std around it."""
    if vector:
        return x.mean(0).tolist(), x.std(0).clamp_min(1e-3).tolist()
    mean = x.mean(0) if mode == "frame" else x.mean((0, 2, 3)).view(-1, 1, 1)  # [c h w] | [c 1 1]
    std = (x - mean).pow(2).mean((0, 2, 3)).sqrt().clamp_min(1e-3).tolist()
    return mean.squeeze(-1).squeeze(-1).tolist(), std


def stat_tensors(mean: list, std: list, like: torch.Tensor, vector: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The statistics as tensors on `like`'s device and dtype, shaped to broadcast over [.. D] or [.. c h w]:
    mean [D] / [c 1 1] / [c h w] (a mean frame), std [D] / [c 1 1]."""
    m = torch.tensor(mean, dtype=like.dtype, device=like.device)
    s = torch.tensor(std, dtype=like.dtype, device=like.device)
    if not vector:
        m, s = (m if m.ndim == 3 else m.view(-1, 1, 1)), s.view(-1, 1, 1)
    return m, s


def stored_batch(raw, obs_shape: list, layout: str) -> torch.Tensor:
    """Observations as the user stores them — a batch [b, *obs_shape] or one observation, any array type — -> a
    tensor batch, or a one-line UserError naming the expected shape."""
    x = raw if torch.is_tensor(raw) else torch.as_tensor(np.asarray(raw))
    if list(x.shape) == obs_shape:
        x = x[None]
    if list(x.shape[1:]) != obs_shape:
        raise UserError(f"observations shaped {list(x.shape)} do not match the buffer's {obs_shape} "
                        f"({layout}); pass [batch, {', '.join(map(str, obs_shape))}] as stored")
    return x


def peek_obs_shape(path: str) -> tuple | None:
    """One observation's shape in a buffer — a .npz or a folder of .npy (their `obs` header alone), a Minari dataset
    (its metadata) — reading no data (None when that cannot be read: loading the buffer then says why)."""
    from .formats import minari_obs_shape
    from .mmap import folder_obs_shape
    shape = minari_obs_shape(path) or folder_obs_shape(path)
    if shape:
        return shape
    try:
        with zipfile.ZipFile(Path(path).expanduser()) as z, z.open("obs.npy") as f:
            major = np.lib.format.read_magic(f)[0]
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            return tuple(read(f)[0][1:])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def encoder_for(data: dict, layout: str = "auto") -> str | None:
    """nature_cnn for frames (they read best through the DQN convolutions), None (the configured default) for
    vectors; with layout auto, the layout of data.path's observations, read from the buffer's header."""
    if layout == "auto":
        path = data.get("path")
        shape = peek_obs_shape(path) if isinstance(path, str) else (
            tuple(path["obs"].shape[1:]) if isinstance(path, Mapping) and "obs" in path else None)
        layout = detect_layout(shape) if shape else "frames"  # the embedded default: frames
    return None if layout == "vector" else "nature_cnn"
