"""Video domain: clips uint8 [t c h w] -> tubelet tokens (3-D patches with space-time positions). Default data:
moving digits (`moving`). Views: temporal crops (clips of one video at different times) with a spatial crop, flip
and colour jitter shared by every frame of a view; local views are shorter, smaller clips. Masking: VideoMAE's
tubes or random space-time tokens; MAE reconstructs each tubelet's normalized pixels.

VideoDomain keeps its recipe, loading the clips (split, statistics) and its state; its other members hand over to
views.py (temporal crops and spatial parameters drawn per sample, applied a batch at a time), inputs.py (clips ->
standardized model input), tokens.py (the tubelet, the grid, the masks) and evaluation.py (kNN on other labels,
raw-pixel baselines)."""
import sys
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import torch
from torch import nn

from multissl.data import sample_views
from multissl.errors import UserError

from .. import raw
from ..cache import default_cache_dir
from ..memory import given
from ..patches import PatchEmbed, masked_mse, patchify
from . import evaluation, inputs, moving, recipe, shards, tokens
from .tokens import MASKS
from .views import apply_groups, centre_window, spatial_draw, temporal_crops

SPLIT_CODES = {"train": 0, "test": 1}
SPLIT_NAMES = {c: s for s, c in SPLIT_CODES.items()}


class Videos(torch.utils.data.Dataset):
    """A split's clips as the engine sees them: x = (split code, index) [2], a reference the domain reads frames
    from; y the class id (-1: none)."""

    def __init__(self, clips, code: int):
        self.clips, self.code = clips, code

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        return {"x": torch.tensor([self.code, i]), "y": int(self.clips.labels[i])}


class VideoDomain:
    name = "video"

    def __init__(self, frames: int = 8, stride: int = 1, fps: float | None = None, size: int | None = None,
                 tubelet=None, pos_embed: str = "learned", mask: str = "tube", mask_ratio: float = 0.9,
                 crop_scale=(0.4, 1.0), crop_ratio=(0.75, 1.3333), flip: float | None = None, jitter: float = 0.4,
                 jitter_p: float = 0.8, clips_apart: int | None = None, local_frames: int | None = None,
                 local_size: int | None = None, local_scale=(0.15, 0.4), norm_pix_loss: bool = True,
                 decoder: str = "auto", default: Mapping = MappingProxyType(moving.DEFAULT), test_fraction: float = 0.2,
                 cache_dir: str | None = None,
                 data=None, state: dict | None = None):
        if mask not in MASKS:
            raise UserError(f"domain.mask must be one of {', '.join(MASKS)}, got {mask!r}")
        if frames < 1 or stride < 1:
            raise UserError(f"domain.frames={frames} and domain.stride={stride} must be at least 1")
        self.frames, self.stride, self.target_fps, self.size = frames, stride, fps, size
        self.tubelet_cfg, self.pos_embed, self.mask_mode, self.mask_ratio = tubelet, pos_embed, mask, mask_ratio
        self.crop_scale, self.crop_ratio, self.flip = tuple(crop_scale), tuple(crop_ratio), flip
        self.jitter, self.jitter_p, self.clips_apart = jitter, jitter_p, clips_apart
        self.local_frames_cfg, self.local_size_cfg, self.local_scale = local_frames, local_size, tuple(local_scale)
        self.norm_pix_loss, self.test_fraction, self.decoder = norm_pix_loss, test_fraction, decoder
        self.default = {**moving.DEFAULT, **dict(default or {})}
        self.cache_dir = cache_dir or default_cache_dir()
        self.data = data or {}
        self.channels = self.mean = self.std = self.tubelet = None
        self.classes, self.extra, self._splits, self._clips, self._pixels = None, {}, None, {}, {}
        if state:
            self.load_state(state)

    # ---- data ----------------------------------------------------------------------------------------------
    def dataset(self, split: str):
        if self._splits is None:
            self._clips = self._load()
            self._splits = {s: Videos(c, SPLIT_CODES[s]) for s, c in self._clips.items()}
            first = self._clips["train"].read(0, [0])  # [1 c s s]
            self.channels, stored = first.shape[1], first.shape[-1]
            self.size = self.size or stored
            if self.tubelet is None:
                self.tubelet = tokens.tubelet_of(self.tubelet_cfg, self.frames, self.size)
            if self.mean is None:
                self._fit_stats()
        return self._splits.get(split)

    def _load(self) -> dict:
        if given(self.data.get("path")):
            from .sources import load
            # a video must hold one clip: `frames` every `stride` (with domain.fps the stride is each video's own)
            span = self.frames if self.target_fps else (self.frames - 1) * self.stride + 1
            clips = load(self.data, self.size, span, self.decoder, self.cache_dir)
            self.classes = clips["train"].classes
            return clips
        from .sources import ArrayClips
        d = moving.cached(self.cache_dir, **self.default)
        perm = np.random.default_rng(0).permutation(len(d["video"]))  # a fixed split, not the run seed's
        n_test = int(len(perm) * self.test_fraction)
        parts = {"train": np.sort(perm[n_test:]), "test": np.sort(perm[:n_test])}
        self.classes = [str(i) for i in range(10)]
        self.extra = {"direction": {s: d["direction"][idx].tolist() for s, idx in parts.items()}}
        return {s: ArrayClips(d["video"][idx], d["digit"][idx].tolist(), self.classes, self.size)
                for s, idx in parts.items()}

    def _fit_stats(self):
        """Per-channel mean and std of the evaluation clips of up to 256 training videos."""
        ds = self._splits["train"]
        idx = torch.linspace(0, len(ds) - 1, min(len(ds), 256)).long().tolist()
        x = torch.stack([self.eval_raw(ds[i]["x"]) for i in idx]).float() / 255  # [n t c s s]
        self.mean, self.std = inputs.channel_stats(x)
        self.flip, line = recipe.choose_flip(x, self.flip)
        if line:
            print(line, file=sys.stderr)

    @staticmethod
    def records(data: dict) -> dict:
        """data.path's videos as shard items, in the order and with the labels and classes training reads
        (video/shards.py)."""
        return shards.records(data)

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes else None

    def state(self) -> dict:
        return {"frames": self.frames, "stride": self.stride, "size": self.size, "channels": self.channels,
                "tubelet": self.tubelet, "mean": self.mean, "std": self.std, "views": {"flip": self.flip}}

    def load_state(self, s: dict):
        self.frames, self.stride, self.size, self.channels = s["frames"], s["stride"], s["size"], s["channels"]
        self.tubelet, self.mean, self.std = s["tubelet"], s["mean"], s["std"]
        if self.flip is None:  # the state's choice; states saved before the choice trained with recipe.BEFORE
            self.flip = (s.get("views") or {}).get("flip", recipe.BEFORE)

    # ---- views (views.py) ----------------------------------------------------------------------------------
    def video(self, x: torch.Tensor):
        """A reference x = (split code, index) -> (that split's clips, index)."""
        return self._clips[SPLIT_NAMES[int(x[0])]], int(x[1])

    def _stride(self, clips, i: int) -> int:
        """domain.stride, or the stride that samples video i at domain.fps frames per second."""
        return inputs.stride_for(clips, i, self.target_fps, self.stride)

    @property
    def local_frames(self) -> int:
        return self.local_frames_cfg or max(self.tubelet[0], self.frames // 2)

    @property
    def local_size(self) -> int:
        return self.local_size_cfg or max(self.tubelet[1], self.size // 2)

    @property
    def local_views(self) -> bool:
        """Multi-crop: shorter, smaller clips, offered when one holds at least 2 x 2 patches."""
        return self.tubelet is None or self.local_size // self.tubelet[1] >= 2

    def views(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2, n_local: int = 0) -> list[torch.Tensor]:
        return sample_views(self, self.draw(x, rng, n_global, n_local))

    def draw(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2, n_local: int = 0) -> dict:
        """x (split, index) -> the frames each view takes, uint8 [v t c s s] (global, then local: shorter clips), and
        each view's spatial parameters."""
        clips, i = self.video(x)
        n, stride = clips.frames(i), self._stride(clips, i)
        out = {}
        for name, count, length, scale in (("global", n_global, self.frames, self.crop_scale),
                                           ("local", n_local, self.local_frames, self.local_scale)):
            if not count:
                continue
            out[name] = temporal_crops(clips, i, n, count, length, stride, self.clips_apart, rng)
            spatial = spatial_draw(self.size, self.size, count, scale, self.crop_ratio, self.flip, self.jitter,
                                   self.jitter_p, self.channels, rng)
            out |= {f"{name}_{k}": v for k, v in spatial.items()}
        return out

    def apply(self, d: dict) -> list[torch.Tensor]:
        """draw's tensors for a batch, on any device -> the views [b c t s s]: global ones, then local ones."""
        return [self._normalize(v) for v in apply_groups(d, {"global": self.size, "local": self.local_size})]

    # ---- model input (inputs.py) ---------------------------------------------------------------------------
    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """float [b t c s s] in [0, 1] -> the model input [b c t s s], standardized per channel."""
        return inputs.standardize(x, self.mean, self.std)

    def eval_raw(self, x: torch.Tensor) -> torch.Tensor:
        """The evaluation clip of a stored video, as stored: uint8 [t c s s] (the middle window)."""
        clips, i = self.video(x)
        return clips.read(i, centre_window(clips.frames(i), self.frames, self._stride(clips, i)))

    def eval_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.preprocess(self.eval_raw(x)[None])[0]

    def raw_features(self, x: torch.Tensor, pad=None) -> torch.Tensor:
        """The raw-clip baseline: uint8 [b t c s s] -> the clip's pixels, at most 32 x 32 per frame [b f]."""
        return raw.pixels(x)

    def preprocess(self, raw) -> torch.Tensor:
        """Clips uint8 [b t c h w] or [b t h w c] (or float in [0, 1]) of any length and size, or a list of clips
        [t c h w] / [t h w c] each of its own -> the model input [b c t s s]: the middle `frames` (every `stride`;
        a shorter clip spread evenly), resized as in training."""
        return inputs.preprocess(raw, self.channels, self.frames, self.stride, self.size, self.mean, self.std)

    # ---- tokens and masking (tokens.py) --------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int, int]:
        return tokens.grid_of(self.tubelet, self.frames, self.size)

    @property
    def num_tokens(self) -> int:
        return int(np.prod(self.grid))

    @property
    def target_dim(self) -> int:
        return int(np.prod(self.tubelet)) * self.channels

    def embedder(self, dim: int) -> nn.Module:
        return PatchEmbed(self.channels, (self.frames, self.size, self.size), tuple(self.tubelet), dim, self.pos_embed)

    def steps(self, tokens: torch.Tensor, pad: torch.Tensor | None):
        """tokens [b n d] of a global view over the grid [t h w] (row-major) -> one step per tubelet of time, first
        first: the mean over its places [b t d]."""
        b, n, d = tokens.shape
        t = self.grid[0]
        return tokens.view(b, t, n // t, d).mean(2), None if pad is None else pad.view(b, t, -1).all(2)

    def mask(self, batch_size: int, rng: torch.Generator):
        return tokens.mask(self.mask_mode, batch_size, self.grid, self.mask_ratio, rng)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """[b c t s s] -> each tubelet's pixels [b n (t h w c)], normalized per tubelet (norm_pix_loss)."""
        return patchify(x, tuple(self.tubelet), self.norm_pix_loss)

    def reconstruction_loss(self, pred, target, masked):
        return masked_mse(pred, target, masked)

    # ---- evaluation (evaluation.py) ------------------------------------------------------------------------
    def downstream_metrics(self, embed, limit: int | None = None) -> dict:
        """Beside the engine's kNN on the class label: the same kNN on the other labels of the data (moving digits:
        `knn_direction`), and on raw pixels — `pixel_knn_<label>` on the whole evaluation clip and `frame_knn_<label>`
        on its first frame (at most 32 x 32 per frame, on at most evaluation.PIXEL_CLIPS clips per split) — the
        baselines an encoder should beat (computed once)."""
        tr, te = self._splits["train"], self._splits.get("test")
        if te is None or not (self.classes or self.extra):
            return {}
        return evaluation.knn_metrics(tr, te, self.extra, embed, limit,
                                      lambda ds: evaluation.raw_pixels(ds, self.eval_raw, self.size), self._pixels)
