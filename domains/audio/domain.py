"""AudioDomain: its recipe (the constructor), its data and statistics, its state, and thin members over the
modules that hold each concern: `sources` (clips), `spectrogram` (model input), `views` (augmentation);
the patch tokens, masks and targets are the shared ones of domains/patches.py and domains/masking.py. The model
reads normalized log-mel spectrograms [1 mel frames] (domain.input=logmel), or the waveform [1 samples] in frames of
domain.frame = [window hop] samples (domain.input=waveform: wav2vec 2.0, HuBERT, AST, which make their own
features)."""
import torch
from torch import nn

from multissl.data import sample_views
from multissl.errors import UserError

from .. import raw
from ..files import class_count, locate
from ..masking import band_mask, random_mask
from ..memory import in_memory
from ..patches import PatchEmbed, masked_mse, patchify
from . import views as V
from .sources import folder_splits, hf_audio, memory_waves, records, shard_splits, spoken_words
from .spectrogram import (LogMel, fit_length, frame_count, frame_patches, mel_stats, normalized, waveform_batch,
                          whole_patches)

WHAT = "a folder of audio files, a saved HF dataset or shards"


class AudioDomain:
    name = "audio"
    local_views = True  # multi-crop: windows of local_seconds

    def __init__(self, sample_rate: int = 16000, clip_seconds: float = 1.0, n_mels: int = 40, n_fft: int = 400,
                 hop: int = 160, f_min: float = 0.0, f_max: float | None = None, patch_size=(None, 2),
                 mask_mode: str = "patches", mask_ratio: float = 0.75, mask_band=(2, 5),
                 gain_db: float = 6.0, mix_p: float = 0.5, mix_clip_p: float = 0.5, snr_db=(5.0, 30.0),
                 shift_seconds: float = 0.1, freq_scale=(0.6, 1.5), time_scale=(0.6, 1.5),
                 pos_embed: str = "sincos", norm_pix_loss: bool = True, local_crops: int | None = None,
                 local_seconds: float | None = None, input: str = "logmel", frame=(400, 320),
                 cache_dir: str | None = None, data=None, state: dict | None = None):
        if mask_mode not in ("patches", "bands"):
            raise UserError(f"domain.mask_mode must be patches or bands, got {mask_mode!r}")
        if input not in ("logmel", "waveform"):
            raise UserError(f"domain.input must be logmel or waveform, got {input!r}")
        if len(frame) != 2 or not all(isinstance(v, int) and v > 0 for v in frame):
            raise UserError(f"domain.frame must be [window, hop] in samples, two positive numbers, got {frame}")
        self.waveform, self.frame = input == "waveform", tuple(frame)
        self.rate, self.clip = int(sample_rate), int(round(sample_rate * clip_seconds))
        self.n_mels, self.n_fft, self.hop, self.f_min, self.f_max = n_mels, n_fft, hop, f_min, f_max
        self.patch = (patch_size[0] or n_mels, patch_size[1])  # null frequency patch = whole frames
        self.mask_mode, self.mask_ratio, self.mask_band = mask_mode, mask_ratio, tuple(mask_band)
        self.gain_db, self.mix_p, self.mix_clip_p = gain_db, mix_p, mix_clip_p
        self.snr_db, self.shift = tuple(snr_db), int(round(shift_seconds * sample_rate))
        self.freq_scale, self.time_scale, self.norm_pix_loss = tuple(freq_scale), tuple(time_scale), norm_pix_loss
        self.cache_dir, self.data, self.pos_embed = cache_dir, data or {}, pos_embed
        self.mel_frames = self.whole_patches(self.clip)  # the log-mel's frames: its input, and the raw baseline
        self.frames = self.clip if self.waveform else self.mel_frames  # the model input's time axis
        if n_mels % self.patch[0] or self.mel_frames == 0:
            raise UserError(f"domain.patch_size={list(self.patch)} must tile {n_mels} mel bins and fit in "
                            f"{self.clip // hop + 1} frames; pick a frequency patch that divides domain.n_mels")
        if self.waveform and self.time_tokens(self.clip) == 0:
            raise UserError(f"domain.frame={list(self.frame)} must fit in a clip of {self.clip} samples; set "
                            f"domain.clip_seconds higher or the frame shorter")
        self.local_crops = local_crops
        self.local_clip = int(round(sample_rate * local_seconds)) if local_seconds else self.clip // 2
        self.local_frames = self.local_clip if self.waveform else self.whole_patches(self.local_clip)
        if not 0 < self.local_clip <= self.clip or self.time_tokens(self.local_clip) == 0:
            raise UserError(f"domain.local_seconds={local_seconds} must be positive, at most domain.clip_seconds, and "
                            f"hold one token ({self.min_samples / sample_rate:.3f} s)")
        self.mean = self.std = None
        self._splits, self.num_classes = None, None
        self._mel = LogMel(self.rate, n_fft, hop, n_mels, f_min, f_max)
        if state:
            self.load_state(state)

    # ---- data ---------------------------------------------------------------------------------
    def dataset(self, split: str):
        if self._splits is None:
            self._splits = self._load()
            if self.mean is None:
                self._fit_stats(self._splits["train"])
        return self._splits.get(split)

    def _load(self):
        path, skip_bad = self.data.get("path"), bool(self.data.get("skip_bad", False))
        if in_memory(path):
            splits = {"train": memory_waves(path, self.rate, self.min_samples)}  # unsplit, as a folder without train/
        elif not path:
            splits = spoken_words(self.cache_dir, self.rate, self.clip)
        else:
            kind, where = locate(path, WHAT)
            splits = (folder_splits(where, self.rate, self.min_samples, skip_bad) if kind == "folder" else
                      shard_splits(where, self.rate, self.min_samples, skip_bad) if kind == "shards" else
                      hf_audio(str(where), kind == "saved", self.rate, self.min_samples, skip_bad))
        self.num_classes = class_count(splits["train"])
        return splits

    @staticmethod
    def records(data: dict) -> dict:
        """data.path's audio files as shard items: each file as stored, in the order and with the labels training
        reads (sources.records)."""
        kind, where = locate(data.get("path"), WHAT)
        return records(kind, where, bool(data.get("skip_bad", False)))

    def whole_patches(self, samples: int) -> int:
        """Spectrogram frames of a clip of `samples`, cut to whole time patches."""
        return whole_patches(samples, self.hop, self.patch[1])

    def time_tokens(self, samples: int) -> int:
        """Token columns of a clip of `samples`: its waveform frames, or its spectrogram's time patches."""
        return frame_count(samples, *self.frame) if self.waveform else self.whole_patches(samples) // self.patch[1]

    @property
    def min_samples(self) -> int:
        return self.frame[0] if self.waveform else self.patch[1] * self.hop  # one token

    def _fit_stats(self, ds):
        """Per-mel-bin mean and std of the log-mel features of (up to 1024) training clips."""
        self.mean, self.std = mel_stats(ds, self.log_mel, self.clip)

    def state(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    def load_state(self, s: dict):
        self.mean, self.std = s["mean"], s["std"]

    # ---- model input ----------------------------------------------------------------------------
    def log_mel(self, w: torch.Tensor, frames: int | None = None) -> torch.Tensor:
        """[.. samples] -> [.. mel frames] log-mel, cut to whole time patches (`frames`, default the clip's), on w's
        device."""
        return self._mel(w, frames or self.mel_frames)

    def features(self, w: torch.Tensor, frames: int | None = None) -> torch.Tensor:
        """[b samples] -> normalized log-mel [b 1 mel frames]: the model input."""
        return normalized(self.log_mel(w, frames), self.mean, self.std)

    def model_input(self, w: torch.Tensor) -> torch.Tensor:
        """Clips [b samples] -> the model input: normalized log-mel [b 1 mel frames] or the waveform [b 1 samples]."""
        return w[:, None] if self.waveform else self.features(w)

    def preprocess(self, raw) -> torch.Tensor:
        """Waveforms [b samples] (float in [-1, 1] or int16) at domain.sample_rate -> model input; longer
        or shorter clips are centre-cropped or zero-padded to domain.clip_seconds."""
        return self.model_input(waveform_batch(raw, self.rate, self.clip))

    def eval_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.model_input(fit_length(x, self.clip)[None])[0]

    def eval_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation sends the clip-length waveform; `preprocess` makes the model input on the device."""
        return fit_length(x, self.clip)

    def raw_features(self, x: torch.Tensor, pad=None) -> torch.Tensor:
        """The raw log-mel baseline: waveforms [b samples] -> the clip's log-mel frames, randomly projected to 512
        numbers when longer (a long clip's frames would not fit the evaluation's memory) [b f]."""
        return raw.projected(self.features(waveform_batch(x, self.rate, self.clip)))

    # ---- views ----------------------------------------------------------------------------------
    def views(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2, n_local: int = 0) -> list[torch.Tensor]:
        """x float [samples] -> n_global views [1 mel frames] (BYOL-A style; no reversal, no flips), then local
        views: the same augmentations of shorter windows [1 mel local_frames]; waveform input: [1 samples]."""
        return sample_views(self, self.draw(x, rng, n_global, n_local))

    def _crop(self, w, rng, n: int | None = None):
        """A random window of n samples (default: the clip); short clips land at a random offset in the padding."""
        return V.crop(w, rng, n or self.clip)

    def draw(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2, n_local: int = 0) -> dict:
        """x float [samples] -> per view: a crop (clip-length, or local_seconds for a local view, zero-padded to the
        clip length so views stack), its gain, a background (another training clip or white noise) with its SNR and
        whether it is mixed in, a time shift, and a spectrogram window (pitch and tempo) as [top left height width]
        in spectrogram coordinates (past its edges: zeros); for waveform input the window is over samples alone: a
        change of speed (pitch and tempo together)."""
        n_local = n_local if self.local_crops is None else self.local_crops
        shapes = [(self.clip, self.frames)] * n_global + [(self.local_clip, self.local_frames)] * n_local
        rows, freq_scale = (1, (1.0, 1.0)) if self.waveform else (self.n_mels, self.freq_scale)
        return V.draw_views(x, rng, shapes, n_global, clip=self.clip, n_mels=rows,
                            background=self._splits["train"] if self._splits else None, gain_db=self.gain_db,
                            mix_p=self.mix_p, mix_clip_p=self.mix_clip_p, snr_db=self.snr_db, shift=self.shift,
                            freq_scale=freq_scale, time_scale=self.time_scale)

    def apply(self, d: dict) -> list[torch.Tensor]:
        """draw's tensors for a batch [b v ...], on any device -> the global views [b 1 mel frames], then the local
        ones [b 1 mel local_frames]; waveform input: [b 1 samples]."""
        groups = [(self.clip, self.frames), (self.local_clip, self.local_frames)]
        if not self.waveform:
            return V.apply_views(d, self.features, groups)
        return [v[:, :, 0] for v in V.apply_views(d, lambda w, n: w[:, None, None], groups)]  # [b 1 1 n] -> [b 1 n]

    # ---- tokens and masking ---------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        """[frequency rows, time columns]; waveform frames are one row."""
        return (1 if self.waveform else self.n_mels // self.patch[0]), self.time_tokens(self.clip)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def target_dim(self) -> int:
        return self.frame[0] if self.waveform else self.patch[0] * self.patch[1]

    def embedder(self, dim: int) -> nn.Module:
        if self.waveform:  # overlapping frames, as a strided convolution reads them; a shorter view's keep theirs
            return PatchEmbed(1, (self.clip,), self.frame[:1], dim, self.pos_embed, fit="crop", stride=self.frame[1:])
        return PatchEmbed(1, (self.n_mels, self.frames), self.patch, dim, self.pos_embed)

    def steps(self, tokens: torch.Tensor, pad: torch.Tensor | None):
        """tokens [b n d] over the grid [frequency rows, time columns] (row-major, time fastest) -> one step per time
        column, first first: the mean over its frequency patches [b columns d]. Local views have fewer columns."""
        b, n, d = tokens.shape
        rows = self.grid[0]
        return tokens.view(b, rows, n // rows, d).mean(1), None if pad is None else pad.view(b, rows, -1).all(1)

    def mask(self, batch_size: int, rng: torch.Generator):
        if self.mask_mode == "bands":
            return band_mask(batch_size, self.grid, self.mask_ratio, rng, self.mask_band)
        return random_mask(batch_size, self.num_tokens, self.mask_ratio, rng)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """[b 1 mel frames] -> normalized spectrogram patches [b n (pf pt)]; waveforms [b 1 samples] -> their
        frames [b n window]."""
        if self.waveform:
            return frame_patches(x, *self.frame, self.norm_pix_loss)
        return patchify(x, self.patch, self.norm_pix_loss)

    def reconstruction_loss(self, pred, target, masked):
        return masked_mse(pred, target, masked)
