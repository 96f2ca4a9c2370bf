"""RL domain: replay buffers (.npz, folders of .npy or their shards, memory-mapped: `buffer`) -> observations ->
tokens. Default data: a CartPole pixel buffer collected with gymnasium on first use and cached
(`buffer.default_buffer`).

A sample is one step of the buffer: `x` is its index, and the domain reads the observation and its episode
from the buffer, so a view can be another step of the same episode (temporal positives, never across an
episode boundary). Observations keep their stored layout until they become model input:

    vector  [D]          float state vectors              -> standardized [D], one token per feature
    hw      [H W]        one grayscale frame              -> [1 H W]
    hwc     [H W C]      frames as gymnasium renders them -> [C H W]
    chw     [K H W]      Atari-style frame stacks (or CHW) -> [K H W]
    khwc    [K H W C]    stacks of colour frames           -> [K*C H W]

Frames are scaled to [0, 1] (uint8 / 255), resized when domain.frame_size is set, and standardized with
training statistics: minus the mean frame (or per-channel means), divided by per-channel standard deviations.
A frame stack is one sample: every view shifts all its frames alike.

RLDomain keeps its recipe, loading the buffer (held-out episodes, statistics) and its state; its other members
hand over to observations.py (stored observations -> model input), views.py (the steps views show, draws and the
batched apply), tokens.py (patches of frames) and evaluation.py (held-out episodes, the state probe)."""
import json
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import torch
from torch import nn

from multissl.data import sample_views
from multissl.errors import UserError

from .. import raw
from ..features import FeatureTokenizer
from ..files import locate
from ..masking import random_mask
from ..memory import given, in_memory
from ..patches import masked_mse, patchify
from . import evaluation, formats, observations, tokens
from .buffer import (DEFAULT_BUFFER, LAYOUTS, NDIM, action_space, cache_root, default_buffer, detect_layout,
                     episode_bounds, evenly_spread, read_buffer)
from .mmap import block_records, shards_folder, shards_obs_shape
from .views import apply_views, frame_draw, future_actions, noise_draw, view_steps

WHAT = "a replay buffer (.npz, or a folder of .npy arrays)"


def read_data(path, cache_dir: str | None = None) -> dict:
    """data.path -> the buffer read_buffer returns, memory-mapped: from memory as it is, a Minari dataset converted
    once (a pickle is refused in one line), rl shards streamed once into the cache, a .npz through its copy in the
    cache, a folder of .npy as it is."""
    if in_memory(path):
        return read_buffer(path)
    if (buf := formats.read_format(path, cache_dir)) is not None:
        return buf
    kind, where = locate(path, f"{WHAT} or its shards", folders=True, files=True)
    if kind == "shards":
        return read_buffer(shards_folder(where, cache_root(cache_dir) / "shards"), cache_dir)
    if kind not in ("file", "folder"):
        raise UserError(f"data.path {path} is an HF dataset; the rl domain reads one replay buffer file (.npz) "
                        f"or a folder of .npy arrays, one per key (docs/domains/rl.md)")
    return read_buffer(where, cache_dir)


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

    # ---- data --------------------------------------------------------------------------------------------------
    def dataset(self, split: str):
        if self._splits is None:
            self._splits = self._load()
        return self._splits.get(split)

    def _load(self) -> dict:
        path = self.data.get("path")
        buf = read_data(path, self.cache_dir) if given(path) else default_buffer(self.default, self.cache_dir)
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
        splits = evaluation.held_out(self.episode, self.test_fraction)
        if self.mean is None:
            self._fit_stats(splits["train"].index.numpy())
        return splits

    def _fit_stats(self, train_index: np.ndarray):
        """The statistics (`observations.fit_stats`) of up to `buffer.SAMPLE` training observations, evenly spread."""
        idx = train_index[evenly_spread(len(train_index))]  # indexing a memmap reads these rows only
        x = self.scaled(torch.from_numpy(self._buf["obs"][idx]))  # [n c h w] or [n D]
        self._stats = None
        self.mean, self.std = observations.fit_stats(x, self.is_vector, self.normalize_mode)

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

    @staticmethod
    def records(data: dict) -> dict:
        """data.path's buffer as shard items (`mmap.block_records`): the arrays training reads, in blocks of steps, one
        split (the held-out episodes are chosen from the buffer when training, as from its file)."""
        return {"train": block_records(read_data(data.get("path")))}

    # ---- model input (observations.py) -------------------------------------------------------------------------
    @staticmethod
    def default_encoder(data: dict, layout: str = "auto", **keys) -> tuple[str, str] | None:
        """Frames read best through the DQN convolutions (docs/domains/rl.md), vectors through the configured
        default: asked when the config is composed, so the buffer's observation shape is read from its header."""
        if layout == "auto" and (shape := shards_obs_shape(data.get("path"))):
            layout = detect_layout(shape)  # shards: from their meta
        name = observations.encoder_for(data, layout)
        return (name, "the observations are frames, which the DQN convolutions read best") if name else None

    @staticmethod
    def default_objective(data: dict, **keys) -> tuple[str, str]:
        """SPR: every buffer records the actions of its episodes (the format requires them), and predicting the next
        steps' representations from them beat SimCLR's views of one step on the buffer suite (docs/suites.md)."""
        return "spr", "the buffer records each episode's actions, from which SPR predicts the next steps"

    @property
    def is_vector(self) -> bool:
        return self.layout == "vector"

    @property
    def channels(self) -> int:
        return observations.channels(self.layout, self.obs_shape)

    @property
    def frame_hw(self) -> tuple[int, int]:
        return observations.frame_hw(self.layout, self.obs_shape, self.frame_size)

    def scaled(self, obs: torch.Tensor) -> torch.Tensor:
        """Stored observations [b ...] -> float [b c h w] in [0, 1] at frame_hw, or float [b D]."""
        return observations.scaled(obs, self.layout, self.obs_dtype, None if self.is_vector else self.frame_hw)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[.. D] or [.. c h w] -> standardized: mean [D] / [c] / [c h w] (a mean frame), std [D] / [c]."""
        if self._stats is None or self._stats[0].device != x.device or self._stats[0].dtype != x.dtype:
            # built once per device: a mean frame is ~10^4 numbers, and this runs for every view
            self._stats = observations.stat_tensors(self.mean, self.std, x, self.is_vector)
        m, s = self._stats
        return (x - m) / s

    def preprocess(self, raw) -> torch.Tensor:
        """Observations exactly as the buffer stores them — a batch [b, *obs_shape] or one observation, uint8
        frames on 0..255 (any dtype, e.g. SB3's float copies) or float vectors — -> model input."""
        return self.normalize(self.scaled(observations.stored_batch(raw, self.obs_shape, self.layout)))

    def _input(self, i: int) -> torch.Tensor:
        return self.scaled(torch.from_numpy(np.array(self._buf["obs"][i:i + 1])))[0]  # [c h w] in [0, 1] or [D]

    def eval_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self._input(int(x)))

    def eval_raw(self, x) -> torch.Tensor:
        """Evaluation sends the stored observation; `preprocess` scales and normalizes the batch on the device."""
        return torch.from_numpy(np.array(self._buf["obs"][int(x)]))  # a copy: a memmap's rows are read-only

    def raw_features(self, x: torch.Tensor, pad=None) -> torch.Tensor:
        """The raw-observation baseline: the normalized observation, frames randomly projected to 512 [b f]."""
        return raw.projected(self.preprocess(x))

    # ---- views (views.py) --------------------------------------------------------------------------------------
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
        steps = view_steps(i, int(self.first[i]), last, self.temporal_offset, n_global, n_future, rng)
        out = {"obs": torch.from_numpy(np.stack([self._buf["obs"][j] for j in steps]))}
        if n_future:
            out |= future_actions(self._buf["action"], i, last, n_future, self.actions[0] == "discrete")
        if self.is_vector:
            return out | noise_draw(len(steps), self.obs_shape[0], self.noise_std, rng)
        return out | frame_draw(len(steps), self.intensity, self.shift, rng)

    def apply(self, d: dict) -> list[torch.Tensor]:
        """draw's tensors for a batch [b v ...], on any device -> the views [b c h w] (or [b D]): scaled,
        intensity, DrQ's replicate-pad shift (all frames of a stack move together), normalized."""
        return apply_views(d, self.scaled, self.normalize, self.is_vector, self.noise_std, self.shift)

    # ---- tokens, masking and the target (tokens.py) ------------------------------------------------------------
    @property
    def patch(self) -> tuple[int, int]:
        """domain.patch_size, or per side the divisor nearest to 12 pixels (`tokens.auto_patch`)."""
        return tokens.sides(self.patch_size) if self.patch_size else tokens.auto_patch(self.frame_hw)

    @property
    def grid(self) -> tuple[int, int]:
        return tokens.grid_of(self.frame_hw, self.patch)

    @property
    def num_tokens(self) -> int:
        return self.obs_shape[0] if self.is_vector else self.grid[0] * self.grid[1]

    @property
    def target_dim(self) -> int:
        return 1 if self.is_vector else self.patch[0] * self.patch[1] * self.channels

    def embedder(self, dim: int) -> nn.Module:
        if self.is_vector:
            return FeatureTokenizer([0] * self.obs_shape[0], dim)  # one token per state feature
        return tokens.patch_embedder(self.channels, self.frame_hw, self.patch, dim, self.pos_embed)

    def mask(self, batch_size: int, rng: torch.Generator):
        """Random patches (each through the whole frame stack) or random state features."""
        return random_mask(batch_size, self.num_tokens, self.mask_ratio, rng)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """[b c h w] -> patches [b n (ph pw c)] (standardized per patch: norm_pix_loss), or [b D] -> [b D 1]."""
        return x[..., None] if self.is_vector else patchify(x, self.patch, self.norm_pix_loss)

    def reconstruction_loss(self, pred, target, masked):
        return masked_mse(pred, target, masked)

    # ---- evaluation (evaluation.py) ----------------------------------------------------------------------------
    headline = evaluation.HEADLINE

    def downstream_metrics(self, embed, limit: int | None = None) -> dict:
        """How much of the true state the frozen representation holds: R^2 of a linear (ridge) probe of `state`,
        fit on training episodes and scored on held-out ones — `state_r2/<name>` per variable and
        `state_r2_mean`; `limit` steps per split, evenly spread (None = all). Empty when the buffer has no state
        or no held-out episodes."""
        test = self._splits.get("test")
        if "state" not in self._buf or test is None:
            return {}
        return evaluation.state_probe(embed, self._splits["train"], test, self._buf["state"], self.state_names,
                                      self.probe_alpha, limit)
