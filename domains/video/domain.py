"""Video domain: clips uint8 [t c h w] -> tubelet tokens (3-D patches with space-time positions). Default data:
moving digits (`moving`). Views: temporal crops (clips of one video at different times) with a spatial crop, flip
and colour jitter shared by every frame of a view; local views are shorter, smaller clips. Masking: VideoMAE's
tubes or random space-time tokens; MAE reconstructs each tubelet's normalized pixels."""
import sys
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import torch
from torch import nn

from multissl.data import sample_views
from multissl.errors import UserError

from ..cache import default_cache_dir
from ..image import auto_patch
from ..masking import random_mask
from ..memory import given
from ..patches import PatchEmbed, masked_mse, patchify
from . import moving
from .views import apply_spatial, centre_window, spatial_draw, starts, tube_mask, window

MASKS = ("tube", "random")


def labels_of(ds) -> torch.Tensor:
    return torch.tensor([ds[i]["y"] for i in range(len(ds))])


def pick(values: list, ds) -> torch.Tensor:
    """The entries of a split-long label list that a (possibly subset) dataset holds."""
    return torch.tensor([values[i] for i in getattr(ds, "indices", range(len(ds)))])


def knn(a, ya, b, yb) -> float:
    """The engine's kNN accuracy of b's labels from a's, unlabelled samples (-1) left out."""
    from multissl.monitor import knn_accuracy
    if not (ya >= 0).any() or not (yb >= 0).any():
        return float("nan")
    return knn_accuracy(a[ya >= 0], ya[ya >= 0], b[yb >= 0], yb[yb >= 0])
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
                 crop_scale=(0.4, 1.0), crop_ratio=(0.75, 1.3333), flip: float = 0.5, jitter: float = 0.4,
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

    # ---- data ---------------------------------------------------------------------------------------
    def dataset(self, split: str):
        if self._splits is None:
            self._clips = self._load()
            self._splits = {s: Videos(c, SPLIT_CODES[s]) for s, c in self._clips.items()}
            first = self._clips["train"].read(0, [0])  # [1 c s s]
            self.channels, stored = first.shape[1], first.shape[-1]
            self.size = self.size or stored
            if self.tubelet is None:
                self.tubelet = self._tubelet()
            if self.mean is None:
                self._fit_stats()
        return self._splits.get(split)

    def _load(self) -> dict:
        if given(self.data.get("path")):
            from .sources import load
            # a video must hold one clip: `frames` every `stride` (with domain.fps the stride is each video's own)
            span = self.frames if self.target_fps else (self.frames - 1) * self.stride + 1
            clips = load(self.data, self.size, span, self.decoder)
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

    def _tubelet(self) -> list[int]:
        """domain.tubelet [t h w], its unset (null) sides derived: t = 2 (VideoMAE's), h = w = the smallest divisor of
        the size that leaves at most 4 x 4 patches per frame (CPU-sized; VideoMAE's 16 covers 224 px with 14 x 14)."""
        t, h, w = (list(self.tubelet_cfg) if self.tubelet_cfg else [None, None, None])
        p = auto_patch(self.size, max_side=4)
        t, h, w = t or min(2, self.frames), h or p, w or p
        if self.frames % t or self.size % h or self.size % w:
            raise UserError(f"domain.tubelet=[{t}, {h}, {w}] does not divide clips of {self.frames} frames of "
                            f"{self.size} x {self.size}; pick sides that divide them")
        print(f"multissl: domain.tubelet=[{t}, {h}, {w}]: clips of {self.frames} x {self.size} x {self.size} -> "
              f"{self.frames // t} x {self.size // h} x {self.size // w} tokens (set domain.tubelet to choose)",
              file=sys.stderr)
        return [t, h, w]

    def _fit_stats(self):
        """Per-channel mean and std of the evaluation clips of up to 256 training videos."""
        ds = self._splits["train"]
        idx = torch.linspace(0, len(ds) - 1, min(len(ds), 256)).long().tolist()
        x = torch.stack([self.eval_raw(ds[i]["x"]) for i in idx]).float() / 255  # [n t c s s]
        self.mean = x.mean((0, 1, 3, 4)).tolist()
        self.std = x.std((0, 1, 3, 4)).clamp_min(1e-3).tolist()

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes else None

    def state(self) -> dict:
        return {"frames": self.frames, "stride": self.stride, "size": self.size, "channels": self.channels,
                "tubelet": self.tubelet, "mean": self.mean, "std": self.std}

    def load_state(self, s: dict):
        self.frames, self.stride, self.size, self.channels = s["frames"], s["stride"], s["size"], s["channels"]
        self.tubelet, self.mean, self.std = s["tubelet"], s["mean"], s["std"]

    # ---- views ----------------------------------------------------------------------------------------
    def video(self, x: torch.Tensor):
        """A reference x = (split code, index) -> (that split's clips, index)."""
        return self._clips[SPLIT_NAMES[int(x[0])]], int(x[1])

    def _stride(self, clips, i: int) -> int:
        """domain.stride, or the stride that samples video i at domain.fps frames per second."""
        fps = clips.fps(i) if self.target_fps else None
        return max(1, round(fps / self.target_fps)) if fps else self.stride

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
        for name, count, length in (("global", n_global, self.frames), ("local", n_local, self.local_frames)):
            if not count:
                continue
            span = (length - 1) * stride + 1
            first = starts(n, span, count, self.clips_apart, rng)
            f = clips.read(i, [k for s in first for k in window(n, length, stride, s)])  # [(v t) c s s]
            out[name] = f.view(count, length, *f.shape[1:])
            scale = self.crop_scale if name == "global" else self.local_scale
            for k, v in spatial_draw(self.size, self.size, count, scale, self.crop_ratio, self.flip, self.jitter,
                                     self.jitter_p, self.channels, rng).items():
                out[f"{name}_{k}"] = v
        return out

    def apply(self, d: dict) -> list[torch.Tensor]:
        """draw's tensors for a batch, on any device -> the views [b c t s s]: global ones, then local ones."""
        views = []
        for name, size in (("global", self.size), ("local", self.local_size)):
            if name in d:
                x = apply_spatial(d[name], d[f"{name}_box"], d[f"{name}_flip"], d[f"{name}_order"],
                                  d[f"{name}_factor"], size)  # [b v t c s s]
                views += [self._normalize(x[:, k]) for k in range(x.shape[1])]
        return views

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """float [b t c s s] in [0, 1] -> the model input [b c t s s], standardized per channel."""
        m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return ((x - m) / s).transpose(1, 2)

    def eval_raw(self, x: torch.Tensor) -> torch.Tensor:
        """The evaluation clip of a stored video, as stored: uint8 [t c s s] (the middle window)."""
        clips, i = self.video(x)
        return clips.read(i, centre_window(clips.frames(i), self.frames, self._stride(clips, i)))

    def eval_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.preprocess(self.eval_raw(x)[None])[0]

    def preprocess(self, raw) -> torch.Tensor:
        """Clips uint8 [b t c h w] or [b t h w c] (or float in [0, 1]) of any length and size, or a list of clips
        [t c h w] / [t h w c] each of its own -> the model input [b c t s s]: the middle `frames` (every `stride`;
        a shorter clip spread evenly), resized as in training."""
        if isinstance(raw, (list, tuple)):
            if not raw:
                raise UserError("no clips to embed: pass a batch [batch, frames, channels, height, width] or a list "
                                "of clips")
            return torch.cat([self.preprocess(torch.as_tensor(np.asarray(c))[None]) for c in raw])
        x = torch.as_tensor(np.asarray(raw)) if not torch.is_tensor(raw) else raw
        if x.ndim == 4 and self.channels == 1:
            x = x[:, :, None]
        if x.ndim != 5:
            raise UserError(f"a video batch is [batch, frames, channels, height, width] (or channels last), got "
                            f"shape {tuple(x.shape)}")
        if x.shape[2] not in (1, 3) and x.shape[-1] in (1, 3):
            x = x.permute(0, 1, 4, 2, 3)  # channels last -> [b t c h w]
        if x.shape[2] != self.channels:
            raise UserError(f"clips have {x.shape[2]} channels but the encoder was trained on {self.channels}")
        x = x[:, centre_window(x.shape[1], self.frames, self.stride)]
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (self.size, self.size):
            import torchvision.transforms.v2.functional as TF
            b, t = x.shape[:2]
            x = TF.center_crop(TF.resize(x.flatten(0, 1), self.size, antialias=True), [self.size] * 2)
            x = x.view(b, t, *x.shape[1:])
        return self._normalize(x)

    # ---- tokens and masking ------------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int, int]:
        t, h, w = self.tubelet
        return self.frames // t, self.size // h, self.size // w

    @property
    def num_tokens(self) -> int:
        return int(np.prod(self.grid))

    @property
    def target_dim(self) -> int:
        return int(np.prod(self.tubelet)) * self.channels

    def embedder(self, dim: int) -> nn.Module:
        return PatchEmbed(self.channels, (self.frames, self.size, self.size), tuple(self.tubelet), dim, self.pos_embed)

    def mask(self, batch_size: int, rng: torch.Generator):
        if self.mask_mode == "tube":
            return tube_mask(batch_size, self.grid, self.mask_ratio, rng)
        return random_mask(batch_size, self.num_tokens, self.mask_ratio, rng)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """[b c t s s] -> each tubelet's pixels [b n (t h w c)], normalized per tubelet (norm_pix_loss)."""
        return patchify(x, tuple(self.tubelet), self.norm_pix_loss)

    def reconstruction_loss(self, pred, target, masked):
        return masked_mse(pred, target, masked)

    # ---- evaluation ---------------------------------------------------------------------------------------------
    def downstream_metrics(self, embed, limit: int | None = None) -> dict:
        """Beside the engine's kNN on the class label: the same kNN on the other labels of the data (moving digits:
        `knn_direction`), and on raw pixels — `pixel_knn_<label>` on the whole evaluation clip and `frame_knn_<label>`
        on its first frame (at most 32 x 32 per frame) — the baselines an encoder should beat (computed once)."""
        from multissl.monitor import subset
        tr, te = self._splits["train"], self._splits.get("test")
        if te is None or not (self.classes or self.extra):
            return {}
        tr, te = subset(tr, limit), subset(te, limit)
        labels = {"acc": (labels_of(tr), labels_of(te))}
        labels |= {k: (pick(v["train"], tr), pick(v["test"], te)) for k, v in self.extra.items()}
        out = {}
        if self.extra:
            a, b = embed(tr), embed(te)
            out |= {f"knn_{k}": knn(a, ya, b, yb) for k, (ya, yb) in labels.items() if k != "acc"}
        if limit not in self._pixels:
            (pa, fa), (pb, fb) = self._raw(tr), self._raw(te)
            self._pixels[limit] = {f"{kind}_knn_{k}": knn(u, ya, v, yb) for k, (ya, yb) in labels.items()
                                   for kind, u, v in (("pixel", pa, pb), ("frame", fa, fb))}
        return out | self._pixels[limit]

    def _raw(self, ds) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw pixels of ds's evaluation clips [n t*c*r*r] and of their first frames [n c*r*r], r = min(size, 32)."""
        import torch.nn.functional as F
        r = min(self.size, 32)
        clips = torch.stack([self.eval_raw(ds[i]["x"]) for i in range(len(ds))]).float() / 255  # [n t c s s]
        small = F.interpolate(clips.flatten(0, 1), size=(r, r), mode="area").view(*clips.shape[:3], r, r)
        return small.flatten(1), small[:, 0].flatten(1)
