"""ImageDomain: uint8 images [c h w] -> patch tokens. Default data: scikit-learn's bundled digits; a user's image
folder or HF dataset through `sources`, at the size and channels chosen there (or set). The class holds the recipe
(its constructor), the data and its automatic size, the state, and thin members over `pixels` (model input),
`views` (augmentation) and the shared patch tokens, masks and targets (domains/patches.py, domains/masking.py)."""
import sys
from functools import partial
from pathlib import Path

import torch
from torch import nn

from multissl.data import sample_views
from multissl.errors import UserError

from .. import raw
from ..files import Files, class_count, hf_splits, labelled, locate, scan, split_folders
from ..masking import random_mask
from ..memory import in_memory
from ..patches import PatchEmbed, masked_mse, patchify
from ..rows import Rows, label_column, row_split
from ..shards import Payloads, Shards, file_split, folder_records, row_records
from . import recipe
from . import views as V
from .pixels import as_images, auto_patch, normalize
from .sources import IMAGE_EXT, channel_stats, choose_size, digits_split, memory_images, read_image, survey


WHAT = "an image folder, a saved HF dataset or shards"


def image_column(features, where) -> str:
    import datasets
    col = next((k for k, v in features.items() if isinstance(v, datasets.Image)), None)
    if col is None:
        raise UserError(f"HF dataset at {where} has no Image column (columns: {list(features)})")
    return col


class ImageDomain:
    name = "image"
    MIN_LOCAL_SIDE = 3  # patches per side of the smallest local crop offered unasked (DINO's 96 px at 16: 6)

    def __init__(self, image_size: int | None = None, channels: int | None = None, patch_size: int | None = None,
                 mask_ratio: float = 0.75, crop_scale=None, crop_ratio=(0.75, 1.3333),
                 flip: float | None = None, jitter: float = 0.4, jitter_p: float = 0.8, grayscale: float = 0.2,
                 blur: float = 0.0, blur_sigma=(0.1, 2.0), local_crops: int | None = None, local_size: int | None = None,
                 local_scale=(0.05, 0.25), norm_pix_loss: bool = True, data=None, state: dict | None = None):
        self.image_size, self.channels, self.patch = image_size, channels, patch_size
        self.mask_ratio, self.crop_ratio = mask_ratio, tuple(crop_ratio)
        self.crop_scale = None if crop_scale is None else tuple(crop_scale)  # None: from the data (recipe.py)
        self.flip, self.jitter, self.jitter_p, self.grayscale = flip, jitter, jitter_p, grayscale
        self.blur, self.blur_sigma = blur, tuple(blur_sigma)
        self.local_crops, self.local_size, self.local_scale = local_crops, local_size, tuple(local_scale)
        self.norm_pix_loss = norm_pix_loss
        self.data = data or {}
        self.mean = self.std = self._mid_share = None
        self._splits, self.num_classes = None, None
        if state:
            self.load_state(state)

    @property
    def local_size_px(self) -> int:
        return self.local_size or max(self.image_size // 2, self.patch)

    @property
    def local_views(self) -> bool:
        """Multi-crop: small crops of local_scale area at local_size. Offered when a local crop holds at least
        MIN_LOCAL_SIDE x MIN_LOCAL_SIDE patches, or when domain.local_crops asks for them: on 8 x 8 digits (local crops
        of 2 x 2 patches) DINO and SwAV learnt less with them than without."""
        return self.local_crops is not None or self.local_size_px // self.patch >= self.MIN_LOCAL_SIDE

    # ---- data ---------------------------------------------------------------------------------
    def dataset(self, split: str):
        if self._splits is None:
            self._splits = self._load()
            if self.mean is None:
                self._fit_stats(self._splits["train"])
            if self._mid_share is None and (self.crop_scale is None or self.flip is None):  # statistics were given
                self._mid_share = channel_stats(self._splits["train"], recipe.SAMPLES)[2]
            self.crop_scale, self.flip, line = recipe.choose_views(self._mid_share, self.crop_scale, self.flip)
            if line:
                print(line, file=sys.stderr)
        return self._splits.get(split)

    def _load(self):
        path = self.data.get("path")
        if in_memory(path):
            splits, self.image_size, self.channels = memory_images(path, self.image_size, self.channels)
        elif not path:
            splits = digits_split()
            self.channels, self.image_size = splits["train"].x.shape[1], splits["train"].x.shape[-1]  # 1, 8
        else:
            kind, where = locate(path, WHAT)
            splits = (self._folder(where) if kind == "folder" else self._shards(where) if kind == "shards" else
                      self._hf(where, from_disk=kind == "saved"))
        self.num_classes = class_count(splits["train"])
        if self.patch is None:
            self.patch = auto_patch(self.image_size)
            side = self.image_size // self.patch
            hint = "; few tokens: set domain.image_size to a multiple of 8" if side < 4 else ""
            print(f"multissl: domain.patch_size={self.patch}: {self.image_size} x {self.image_size} images -> "
                  f"{side} x {side} = {side * side} tokens (set domain.patch_size to choose{hint})", file=sys.stderr)
        return splits

    def _choose(self, count: int, source):
        """Unset image_size / channels from the headers of a sample of the training images (sources.choose_size);
        a domain built with `state=` has both and reads no header."""
        if self.image_size is None or self.channels is None:
            found = survey(count, source, bool(self.data.get("skip_bad", False)))
            self.image_size, self.channels, line = choose_size(found, self.image_size, self.channels, count)
            print(line, file=sys.stderr)

    def _folder(self, root: Path):
        skip_bad = bool(self.data.get("skip_bad", False))
        found = {}
        for split, d in split_folders(root).items():
            found[split] = scan(d, IMAGE_EXT)
            if not found[split]:
                raise UserError(f"no images ({', '.join(sorted(IMAGE_EXT))}) under {d}; "
                                f"put image files (optionally in class subfolders) there")
        train = found["train"]
        self._choose(len(train), lambda i: (train[i], str(train[i])))
        read, out = partial(read_image, channels=self.channels, size=self.image_size), {}
        for split, d in split_folders(root).items():
            labels, classes = labelled(found[split], d, out["train"].classes if out else None)
            out[split] = Files(found[split], labels, classes, read, skip_bad)
        return out

    def _hf(self, path, from_disk: bool):
        """The Image column of an HF dataset, each row decoded when its item is asked for (rows.Rows)."""
        splits = hf_splits(str(path), from_disk)
        import datasets
        col, lab = image_column(splits["train"].features, path), label_column(splits["train"].features)
        skip_bad = bool(self.data.get("skip_bad", False))
        stored = datasets.Image(decode=False)  # the file each row stores, decoded by read_image
        train = Rows(splits["train"], col, stored, str(path))  # the stored files, for the headers
        self._choose(len(train), lambda i: (train.source(i), train.name(i)))
        read = partial(read_image, channels=self.channels, size=self.image_size)
        return {k: row_split(ds, col, stored, str(path), read, lab, skip_bad) for k, ds in splits.items()}

    def _shards(self, where: str):
        """Shards of image files (domains.shards), each item decoded when asked for, as files are."""
        shards = Shards(where, self.name)
        train = Payloads(shards, "train")  # the stored files, for the headers
        self._choose(len(train), lambda i: (train.source(i), train.name(i)))
        read, skip_bad = partial(read_image, channels=self.channels, size=self.image_size), self.data.get("skip_bad")
        return {s: file_split(shards, s, read, bool(skip_bad)) for s in shards.splits}

    @staticmethod
    def records(data: dict) -> dict:
        """data.path's images as shard items: each file as stored, in the order and with the labels training reads
        (domains.shards)."""
        kind, where = locate(data.get("path"), WHAT)
        if kind == "folder":
            return folder_records(where, IMAGE_EXT)
        splits = hf_splits(str(where), kind == "saved")
        import datasets
        feats = splits["train"].features
        return row_records(splits, image_column(feats, where), datasets.Image(decode=False), label_column(feats),
                           str(where))

    def _fit_stats(self, ds):
        """Per-channel mean and std of the training pixels, one image at a time (sources.channel_stats)."""
        self.mean, self.std, self._mid_share = channel_stats(ds)

    def state(self) -> dict:
        """What export saves so `embed(raw)` preprocesses exactly as training did."""
        return {"image_size": self.image_size, "channels": self.channels, "mean": self.mean, "std": self.std,
                "patch_size": self.patch, "views": {"crop_scale": self.crop_scale, "flip": self.flip}}

    def load_state(self, s: dict):
        self.image_size, self.channels, self.mean, self.std = s["image_size"], s["channels"], s["mean"], s["std"]
        self.patch = self.patch or s.get("patch_size") or 2  # exports made before the patch was derived: 2
        self.crop_scale, self.flip = recipe.loaded(s, self.crop_scale, self.flip)

    # ---- model input ----------------------------------------------------------------------------
    def _normalize(self, x):  # float [.. c h w] in [0, 1]
        return normalize(x, self.mean, self.std)

    def preprocess(self, raw) -> torch.Tensor:
        """Raw batch (uint8 0..255 or float 0..1, [b c h w] or [b h w]) -> normalized model input."""
        return self._normalize(as_images(raw, self.channels, self.image_size))

    # ---- views ----------------------------------------------------------------------------------
    def views(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2, n_local: int = 0) -> list[torch.Tensor]:
        """x uint8 [c h w] -> n_global global views [c s s] + local views (one sample's apply)."""
        return sample_views(self, self.draw(x, rng, n_global, n_local))

    def n_local(self, asked: int) -> int:
        """Local crops per sample: domain.local_crops when set, else as many as the objective asks for."""
        return asked if self.local_crops is None else self.local_crops

    def draw(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2, n_local: int = 0) -> dict:
        """x uint8 [c h w] -> the sample and, per view (global views first, then the local crops), its crop box,
        flip, colour-jitter order and factors, grayscale and blur sigma, and whether it is local."""
        if self.crop_scale is None or self.flip is None:
            raise UserError("image views drawn before the data chose them: read dataset('train') first, or set "
                            "domain.crop_scale and domain.flip")
        scales = [self.crop_scale] * n_global + [self.local_scale] * self.n_local(n_local)
        return V.draw_views(x, rng, scales, n_global, ratio=self.crop_ratio, flip=self.flip, jitter=self.jitter,
                            jitter_p=self.jitter_p, grayscale=self.grayscale, blur=self.blur,
                            blur_sigma=self.blur_sigma)

    def apply(self, d: dict) -> list[torch.Tensor]:
        """draw's tensors for a batch [b ...], on any device -> the views [b c s s] (global, then local): crop
        and resize, flip, colour jitter, grayscale, blur, normalize."""
        return V.apply_views(d, self.image_size, self.local_size_px, self._normalize)

    def eval_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation sends the stored uint8 sample; `preprocess` normalizes the batch on the device."""
        return x

    def eval_input(self, x: torch.Tensor) -> torch.Tensor:
        """One stored sample -> the un-augmented model input."""
        return self._normalize(x.float() / 255)

    def raw_features(self, x: torch.Tensor, pad=None) -> torch.Tensor:
        """The raw-pixel baseline: uint8 [b c h w] -> pixels at most 32 x 32 [b f]."""
        return raw.pixels(x)

    # ---- tokens and masking -----------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch) ** 2

    @property
    def target_dim(self) -> int:
        return self.patch * self.patch * self.channels

    def embedder(self, dim: int) -> nn.Module:
        if self.image_size % self.patch:
            raise UserError(f"domain.image_size={self.image_size} is not divisible by domain.patch_size="
                            f"{self.patch}; pick a patch size that divides it or set domain.image_size")
        return PatchEmbed(self.channels, (self.image_size,) * 2, (self.patch,) * 2, dim)

    def steps(self, tokens: torch.Tensor, pad: torch.Tensor | None):
        """tokens [b n d] in PatchEmbed's row-major order (columns fastest) of a square view -> one step per row of
        patches, top to bottom: the mean over its columns [b rows d] (CPC v2 predicts the rows below)."""
        b, n, d = tokens.shape
        side = round(n ** 0.5)  # global and local views are square grids
        return tokens.view(b, side, side, d).mean(2), None if pad is None else pad.view(b, side, side).all(2)

    def mask(self, batch_size: int, rng: torch.Generator):
        return random_mask(batch_size, self.num_tokens, self.mask_ratio, rng)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """[b c h w] -> per-patch pixels [b n p*p*c], each patch normalized (MAE's norm_pix_loss)."""
        return patchify(x, (self.patch, self.patch), self.norm_pix_loss)

    def reconstruction_loss(self, pred, target, masked):
        return masked_mse(pred, target, masked)
