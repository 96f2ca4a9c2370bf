"""RL domain: replay buffers (.npz, `buffer`) -> observations -> tokens. Default data: a CartPole pixel buffer
collected with gymnasium on first use and cached (`buffer.default_buffer`).

A sample is one step of the buffer: `x` is its index, and the domain reads the observation and its episode
from the buffer, so a view can be another step of the same episode (temporal positives, never across an
episode boundary). Observations keep their stored layout until `model_input`:

    vector  [D]          float state vectors              -> standardized [D], one token per feature
    hw      [H W]        one grayscale frame              -> [1 H W]
    hwc     [H W C]      frames as gymnasium renders them -> [C H W]
    chw     [K H W]      Atari-style frame stacks (or CHW) -> [K H W]
    khwc    [K H W C]    stacks of colour frames           -> [K*C H W]

Frames are scaled to [0, 1] (uint8 / 255), resized when domain.frame_size is set, and standardized with
training statistics: minus the mean frame (or per-channel means), divided by per-channel standard deviations.
A frame stack is one sample: every view shifts all its frames alike."""
import json
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from multissl.data import sample_views
from multissl.errors import UserError

from ..features import FeatureTokenizer
from ..files import locate
from ..masking import random_mask
from ..memory import in_memory
from ..patches import PatchEmbed, masked_mse, patchify
from ..probes import state_r2
from .buffer import (DEFAULT_BUFFER, LAYOUTS, NDIM, Steps, action_space, default_buffer, detect_layout, episode_bounds,
                     read_buffer)


# ---- views -------------------------------------------------------------------------------------------------
def temporal_neighbour(i: int, first: int, last: int, offsets: tuple[int, int], rng: torch.Generator) -> int:
    """A step k in [offsets] away from step i, forward or backward (random), inside the episode [first, last].
    When neither direction has k steps left, the farthest step of the episode in the roomier direction."""
    lo, hi = offsets
    if hi == 0:
        return i
    k = int(torch.randint(lo, hi + 1, (), generator=rng))
    options = [j for j in (i + k, i - k) if first <= j <= last]
    if options:
        return options[int(torch.randint(0, len(options), (), generator=rng))] if len(options) > 1 else options[0]
    return last if last - i >= i - first else first


def shifted(x: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ's augmentation, batched: x [b c h w] replicate-padded by `pad` pixels, then each sample's window of
    the original size at its offsets [b 2] (dy, dx in 0..2 pad). All channels (a stack's frames) move together."""
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    p = F.pad(x, (pad, pad, pad, pad), mode="replicate")  # [b c h+2p w+2p]
    rows = (offsets[:, 0, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, c, h, w + 2 * pad)
    p = p.gather(2, rows)
    cols = (offsets[:, 1, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, c, h, w)
    return p.gather(3, cols)


def peek_obs_shape(path: str) -> tuple | None:
    """One observation's shape in a .npz buffer, from its `obs` header alone (None when that cannot be read: loading
    the buffer then says why)."""
    import zipfile
    from pathlib import Path
    try:
        with zipfile.ZipFile(Path(path).expanduser()) as z, z.open("obs.npy") as f:
            major = np.lib.format.read_magic(f)[0]
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            return tuple(read(f)[0][1:])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


# ---- the domain --------------------------------------------------------------------------------------------
class RLDomain:
    name = "rl"

    def __init__(self, layout: str = "auto", frame_size=None, patch_size=None, pos_embed: str = "learned",
                 temporal_offset=(0, 0), shift: int = 4, intensity: float = 0.05, noise_std: float = 0.1,
                 mask_ratio: float = 0.75, norm_pix_loss: bool = True, normalize: str = "frame",
                 test_fraction: float = 0.2, probe_alpha: float = 1.0, default: Mapping = MappingProxyType(DEFAULT_BUFFER),
                 cache_dir: str | None = None, data=None, state: dict | None = None):
        if layout not in ("auto", *LAYOUTS):
            raise UserError(f"domain.layout must be auto or one of {', '.join(LAYOUTS)}, got {layout!r}")
        lo, hi = (int(v) for v in temporal_offset)
        if not 0 <= lo <= hi:
            raise UserError(f"domain.temporal_offset={list(temporal_offset)} must be [min, max] steps with "
                            f"0 <= min <= max ([0, 0] = augmented views of one step only)")
        if not 0.0 <= test_fraction < 1.0:
            raise UserError(f"domain.test_fraction={test_fraction} must be in [0, 1): the share of held-out episodes")
        if normalize not in ("frame", "channel"):
            raise UserError(f"domain.normalize must be frame (subtract the mean training frame) or channel, got "
                            f"{normalize!r}")
        self.normalize_mode = normalize
        self.layout, self.frame_size = layout, (tuple(int(v) for v in frame_size) if frame_size else None)
        self.patch_size, self.pos_embed = patch_size, pos_embed
        self.temporal_offset, self.shift, self.intensity, self.noise_std = (lo, hi), int(shift), intensity, noise_std
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        self.test_fraction, self.probe_alpha = test_fraction, probe_alpha
        self.default = {**DEFAULT_BUFFER, **dict(default or {})}
        self.cache_dir, self.data = cache_dir, data or {}
        self.obs_shape = self.obs_dtype = self.mean = self.std = self.env_config = None
        self.state_names, self._splits, self._buf, self._stats, self._actions = None, None, None, None, None
        if state:
            self.load_state(state)

    # ---- data ----------------------------------------------------------------------------------------------
    def dataset(self, split: str):
        if self._splits is None:
            self._splits = self._load()
        return self._splits.get(split)

    def _load(self) -> dict:
        path = self.data.get("path")
        if in_memory(path):
            buf = read_buffer(path)
        elif path:
            kind, where = locate(path, "a replay buffer (.npz)", folders=False, files=True)
            if kind != "file":
                raise UserError(f"data.path {path} is a folder or an HF dataset; the rl domain reads one replay "
                                f"buffer file (.npz, docs/domains/rl.md)")
            buf = read_buffer(where)
        else:
            buf = default_buffer(self.default, self.cache_dir)
        obs = buf["obs"]
        if self.obs_shape is None:  # a fresh run; an exported encoder keeps its own layout and statistics
            self.layout = detect_layout(obs.shape[1:]) if self.layout == "auto" else self.layout
            if NDIM[self.layout] != obs.ndim - 1:
                raise UserError(f"domain.layout={self.layout} needs {NDIM[self.layout]}-d observations, the buffer's "
                                f"are {list(obs.shape[1:])}; use domain.layout=auto")
            self.obs_shape, self.obs_dtype = list(obs.shape[1:]), str(obs.dtype)
            self.env_config = json.loads(str(buf["env_config"])) if "env_config" in buf else None
        elif list(obs.shape[1:]) != self.obs_shape:
            raise UserError(f"the buffer's observations are {list(obs.shape[1:])}, the encoder was trained on "
                            f"{self.obs_shape}; use a buffer of the same env settings")
        self._buf = buf
        self.episode, self.first, self.last = episode_bounds(buf["terminated"], buf["truncated"], buf.get("episode"))
        if "state" in buf:
            names, n_state = buf.get("state_names"), buf["state"].shape[1]
            ok = names is not None and len(names) == n_state
            self.state_names = [str(v) for v in names] if ok else [f"state_{i}" for i in range(n_state)]
        splits = self._split()
        if self.mean is None:
            self._fit_stats(splits["train"].index.numpy())
        return splits

    def _split(self) -> dict:
        """Held-out episodes (a fixed draw, seed 0, not the run seed): domain.test_fraction of them, at least one,
        when the buffer has two or more."""
        n_ep = int(self.episode[-1]) + 1
        n_test = min(max(int(round(self.test_fraction * n_ep)), 1), n_ep - 1) if self.test_fraction > 0 else 0
        test_eps = np.random.default_rng(0).permutation(n_ep)[:n_test]
        held = np.isin(self.episode, test_eps)
        out = {"train": Steps(np.flatnonzero(~held))}
        if held.any():
            out["test"] = Steps(np.flatnonzero(held))
        return out

    def _fit_stats(self, train_index: np.ndarray):
        """From up to 4096 training observations: per-feature mean and std (vectors); for frames the mean
        frame [c h w] (normalize=frame: a fixed camera's static background becomes 0, so what differs between
        observations is all the input holds) or the per-channel mean, then the per-channel std around it."""
        idx = train_index[np.linspace(0, len(train_index) - 1, min(len(train_index), 4096)).astype(int)]
        x = self.scaled(torch.from_numpy(self._buf["obs"][idx]))  # [n c h w] or [n D]
        self._stats = None
        if self.is_vector:
            self.mean, self.std = x.mean(0).tolist(), x.std(0).clamp_min(1e-3).tolist()
            return
        mean = x.mean(0) if self.normalize_mode == "frame" else x.mean((0, 2, 3)).view(-1, 1, 1)  # [c h w] | [c 1 1]
        self.mean = mean.squeeze(-1).squeeze(-1).tolist()
        self.std = (x - mean).pow(2).mean((0, 2, 3)).sqrt().clamp_min(1e-3).tolist()

    def state(self) -> dict:
        """What export saves so `embed(obs)` preprocesses exactly as training did, and what rebuilds the env."""
        return {"layout": self.layout, "obs_shape": self.obs_shape, "obs_dtype": self.obs_dtype,
                "frame_size": list(self.frame_size) if self.frame_size else None, "mean": self.mean, "std": self.std,
                "env_config": self.env_config, "state_names": self.state_names}

    def load_state(self, s: dict):
        self.layout, self.obs_shape, self.obs_dtype = s["layout"], s["obs_shape"], s["obs_dtype"]
        self.frame_size = tuple(s["frame_size"]) if s["frame_size"] else None
        self.mean, self.std, self.env_config, self.state_names = s["mean"], s["std"], s["env_config"], s["state_names"]
        self._stats = None

    # ---- model input -----------------------------------------------------------------------------------------
    @staticmethod
    def default_encoder(data: dict, layout: str = "auto", **keys) -> str | None:
        """Frames read best through the DQN convolutions (docs/domains/rl.md), vectors through the configured
        default: asked when the config is composed, so the buffer's observation shape is read from its header."""
        if layout == "auto":
            path = data.get("path")
            shape = peek_obs_shape(path) if isinstance(path, str) else (
                tuple(path["obs"].shape[1:]) if isinstance(path, Mapping) and "obs" in path else None)
            layout = detect_layout(shape) if shape else "frames"  # the embedded default: frames
        return None if layout == "vector" else "nature_cnn"

    @property
    def is_vector(self) -> bool:
        return self.layout == "vector"

    @property
    def channels(self) -> int:
        s = self.obs_shape
        return {"hw": 1, "hwc": s[-1], "chw": s[0], "khwc": s[0] * s[-1]}[self.layout]

    @property
    def frame_hw(self) -> tuple[int, int]:
        if self.frame_size:
            return self.frame_size
        s = self.obs_shape
        return tuple(s[1:3]) if self.layout in ("chw", "khwc") else tuple(s[:2])

    def scaled(self, obs: torch.Tensor) -> torch.Tensor:
        """Stored observations [b ...] -> float [b c h w] in [0, 1] at frame_hw, or float [b D]."""
        x = obs.float()
        if self.is_vector:
            return x
        if self.obs_dtype == "uint8":
            x = x / 255
        x = {"hw": lambda t: t[:, None], "hwc": lambda t: t.permute(0, 3, 1, 2), "chw": lambda t: t,
             "khwc": lambda t: t.permute(0, 1, 4, 2, 3).flatten(1, 2)}[self.layout](x)
        if tuple(x.shape[-2:]) != self.frame_hw:
            import torchvision.transforms.v2.functional as TF
            x = TF.resize(x, list(self.frame_hw), antialias=True)
        return x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[.. D] or [.. c h w] -> standardized: mean [D] / [c] / [c h w] (a mean frame), std [D] / [c]."""
        if self._stats is None or self._stats[0].device != x.device or self._stats[0].dtype != x.dtype:
            # built once per device: a mean frame is ~10^4 numbers, and this runs for every view
            m = torch.tensor(self.mean, dtype=x.dtype, device=x.device)
            s = torch.tensor(self.std, dtype=x.dtype, device=x.device)
            if not self.is_vector:
                m, s = (m if m.ndim == 3 else m.view(-1, 1, 1)), s.view(-1, 1, 1)
            self._stats = (m, s)
        m, s = self._stats
        return (x - m) / s

    def preprocess(self, raw) -> torch.Tensor:
        """Observations exactly as the buffer stores them — a batch [b, *obs_shape] or one observation, uint8
        frames on 0..255 (any dtype, e.g. SB3's float copies) or float vectors — -> model input."""
        x = raw if torch.is_tensor(raw) else torch.as_tensor(np.asarray(raw))
        if list(x.shape) == self.obs_shape:
            x = x[None]
        if list(x.shape[1:]) != self.obs_shape:
            raise UserError(f"observations shaped {list(x.shape)} do not match the buffer's {self.obs_shape} "
                            f"({self.layout}); pass [batch, {', '.join(map(str, self.obs_shape))}] as stored")
        return self.normalize(self.scaled(x))

    def _input(self, i: int) -> torch.Tensor:
        return self.scaled(torch.from_numpy(self._buf["obs"][i:i + 1]))[0]  # [c h w] in [0, 1] or [D]

    def eval_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self._input(int(x)))

    def eval_raw(self, x) -> torch.Tensor:
        """Evaluation sends the stored observation; `preprocess` scales and normalizes the batch on the device."""
        return torch.from_numpy(np.asarray(self._buf["obs"][int(x)]))

    # ---- views -------------------------------------------------------------------------------------------------

    @property
    def actions(self) -> tuple[str, int]:
        """("discrete", n) for integer actions (ids 0..n-1), else ("continuous", d)."""
        if self._actions is None:
            self._actions = action_space(self._buf["action"])  # what read_buffer checked the actions against
        return self._actions

    def views(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2, n_future: int = 0) -> list[torch.Tensor]:
        """Step x -> view 0 of its own observation and views 1.. of observations temporal_offset steps away in
        the same episode (the same step when temporal_offset=[0, 0]), then views of the next n_future steps, each
        augmented independently: random shift + intensity for frames, gaussian noise for vectors."""
        return sample_views(self, self.draw(x, rng, n_global, n_future))

    def draw(self, x, rng: torch.Generator, n_global: int = 2, n_future: int = 0) -> dict:
        """Step x -> the stored observations of its views' steps [v *obs_shape] (as stored: uint8 frames travel
        to the device) and per view an intensity factor and a shift (dy, dx) for frames, a noise [D] for vectors;
        with n_future = K, views of steps x+1..x+K follow (the episode's last step past its end), with `action`
        [K ...] taken at steps x..x+K-1 and `valid` [K] (the step is in the episode)."""
        i, last = int(x), int(self.last[int(x)])
        steps = [i] + [temporal_neighbour(i, int(self.first[i]), last, self.temporal_offset, rng)
                       for _ in range(n_global - 1)]
        steps += [min(i + k, last) for k in range(1, n_future + 1)]
        out = {"obs": torch.from_numpy(np.stack([self._buf["obs"][j] for j in steps]))}
        if n_future:  # the action taken at each step from x on: it leads to the next view
            acts = np.asarray(self._buf["action"][[min(i + k, last) for k in range(n_future)]])
            acts = acts.astype(np.int64) if self.actions[0] == "discrete" else acts.astype(np.float32).reshape(
                n_future, -1)
            out |= {"action": torch.from_numpy(acts),
                    "valid": torch.tensor([i + k <= last for k in range(1, n_future + 1)])}
        if self.is_vector:
            d = self.obs_shape[0]
            noise = [torch.randn(d, generator=rng) if self.noise_std else torch.zeros(d) for _ in steps]
            return out | {"noise": torch.stack(noise)}
        gain, shift = [], []
        for _ in steps:  # per view: intensity, then shift, as the per-sample augmentation drew them
            gain.append(1 + self.intensity * float(torch.randn((), generator=rng).clamp(-2, 2))
                        if self.intensity > 0 else 1.0)
            shift.append([int(torch.randint(0, 2 * self.shift + 1, (), generator=rng)) for _ in range(2)]
                         if self.shift > 0 else [0, 0])
        return out | {"gain": torch.tensor(gain), "shift": torch.tensor(shift)}

    def apply(self, d: dict) -> list[torch.Tensor]:
        """draw's tensors for a batch [b v ...], on any device -> the views [b c h w] (or [b D]): scaled,
        intensity, DrQ's replicate-pad shift (all frames of a stack move together), normalized."""
        b, v = d["obs"].shape[:2]
        x = self.scaled(d["obs"].flatten(0, 1))  # [(b v) c h w] in [0, 1], or [(b v) D]
        if self.is_vector:
            x = self.normalize(x) + self.noise_std * d["noise"].flatten(0, 1).to(x.dtype)
            return list(x.view(b, v, -1).unbind(1))
        x = shifted(x * d["gain"].flatten().to(x.dtype).view(-1, 1, 1, 1), d["shift"].flatten(0, 1), self.shift)
        return list(self.normalize(x).view(b, v, *x.shape[1:]).unbind(1))

    # ---- tokens and masking --------------------------------------------------------------------------------------
    @property
    def patch(self) -> tuple[int, int]:
        """domain.patch_size, or per side the divisor nearest to 12 pixels (ties: the larger one): the 48x72
        default frames give 4 x 6 tokens, 84x84 Atari frames 7 x 7."""
        if self.patch_size:
            p = self.patch_size
            return (int(p), int(p)) if isinstance(p, (int, float)) else (int(p[0]), int(p[1]))
        return tuple(min((d for d in range(1, s + 1) if s % d == 0), key=lambda d: (abs(d - 12), -d))
                     for s in self.frame_hw)

    @property
    def grid(self) -> tuple[int, int]:
        (h, w), (ph, pw) = self.frame_hw, self.patch
        return h // ph, w // pw

    @property
    def num_tokens(self) -> int:
        return self.obs_shape[0] if self.is_vector else self.grid[0] * self.grid[1]

    @property
    def target_dim(self) -> int:
        return 1 if self.is_vector else self.patch[0] * self.patch[1] * self.channels

    def embedder(self, dim: int) -> nn.Module:
        if self.is_vector:
            return FeatureTokenizer([0] * self.obs_shape[0], dim)  # one token per state feature
        (h, w), (ph, pw) = self.frame_hw, self.patch
        if h % ph or w % pw:
            raise UserError(f"domain.patch_size={list(self.patch)} does not tile {h}x{w} frames; pick a patch that "
                            f"divides both sides, or set domain.frame_size")
        return PatchEmbed(self.channels, (h, w), (ph, pw), dim, self.pos_embed)

    def mask(self, batch_size: int, rng: torch.Generator):
        """Random patches (each through the whole frame stack) or random state features."""
        return random_mask(batch_size, self.num_tokens, self.mask_ratio, rng)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """[b c h w] -> patches [b n (ph pw c)] (standardized per patch: norm_pix_loss), or [b D] -> [b D 1]."""
        return x[..., None] if self.is_vector else patchify(x, self.patch, self.norm_pix_loss)

    def reconstruction_loss(self, pred, target, masked):
        return masked_mse(pred, target, masked)

    # ---- evaluation ----------------------------------------------------------------------------------------------
    headline = ("state_r2_mean", True, False)  # the state probe's mean R^2 (not a proportion of held-out steps)

    def downstream_metrics(self, embed, limit: int | None = None) -> dict:
        """How much of the true state the frozen representation holds: R^2 of a linear (ridge) probe of `state`,
        fit on training episodes and scored on held-out ones — `state_r2/<name>` per variable and
        `state_r2_mean`; `limit` steps per split, evenly spread (None = all). Empty when the buffer has no state
        or no held-out episodes."""
        test = self._splits.get("test")
        if "state" not in self._buf or test is None:
            return {}
        tr, test = (Steps(part.index[np.linspace(0, len(part) - 1, min(limit, len(part))).astype(int)])
                    if limit else part for part in (self._splits["train"], test))
        s = self._buf["state"]
        r2 = state_r2(embed(tr).numpy(), s[tr.index.numpy()], embed(test).numpy(), s[test.index.numpy()],
                      self.probe_alpha)
        return {**{f"state_r2/{k}": float(v) for k, v in zip(self.state_names, r2)},
                "state_r2_mean": float(r2.mean())}
