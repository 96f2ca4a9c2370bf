"""Audio domain: mono waveforms -> normalized log-mel spectrograms [1 mel frames] -> time x frequency
patch tokens (AST / SSAST / Audio-MAE). Default data: spoken words synthesized offline (espeak.py); else a folder of
audio files, an HF dataset, or waveforms in memory (`memory_waves`)."""
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from multissl.data import sample_views
from multissl.errors import UserError

from . import augment as A
from .cache import default_cache_dir
from .files import Files, class_count, hf_splits, labelled, locate, split_folders
from .masking import band_mask, random_mask
from .memory import describe, in_memory, is_array, memory_split, numpy, unpack
from .patches import PatchEmbed, masked_mse, patchify
from .rows import label_column, row_split

AUDIO_EXT = {".wav", ".flac", ".ogg", ".mp3"}  # what soundfile (libsndfile) reads
OTHER_AUDIO_EXT = {".m4a", ".aac", ".wma", ".mp4", ".amr", ".aiff", ".opus", ".webm"}


class Waves(torch.utils.data.Dataset):
    """Clips in memory: int16 or float [n samples] (or a list of 1-D clips of any length)."""

    def __init__(self, waves, labels):
        self.waves, self.y = waves, torch.as_tensor(labels, dtype=torch.long)

    def __len__(self):
        return len(self.waves)

    def __getitem__(self, i):
        return {"x": as_float(self.waves[i]), "y": int(self.y[i])}


def as_float(w) -> torch.Tensor:
    w = torch.as_tensor(np.asarray(w))
    return w.float() / 32768 if w.dtype == torch.int16 else w.float()


@lru_cache(maxsize=8)
def _resampler(rate: int, target: int):
    import torchaudio
    return torchaudio.transforms.Resample(rate, target, dtype=torch.float32)


def resample(w: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    """float32 [.. samples] at `rate` -> at `target`: torchaudio's sinc resampling, its kernel built once per
    pair of rates (building it took most of the time of resampling a one-second clip)."""
    return w if rate == target else _resampler(int(rate), int(target))(w)


def to_mono(wave: np.ndarray, rate: int, target: int) -> torch.Tensor:
    """[samples] or [samples channels] at `rate` -> float32 [samples'] at `target`."""
    w = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    if w.ndim == 2:
        w = w.mean(1)
    return resample(w, rate, target)


def read_audio(path, rate: int, min_samples: int = 1, name: str | None = None) -> torch.Tensor:
    """One file (a path, or a file-like such as an HF row's bytes; `name` names it in errors) -> float32 mono
    [samples] at `rate`; every failure is a one-line UserError naming it."""
    import soundfile as sf
    fix = "(or set data.skip_bad=true to skip unreadable samples)"
    name = name or path
    if isinstance(path, (str, Path)) and Path(path).suffix.lower() in OTHER_AUDIO_EXT:
        raise UserError(f"{path}: {Path(path).suffix} files are not supported (readable: "
                        f"{' '.join(sorted(AUDIO_EXT))}); convert it, e.g. ffmpeg -i in.m4a out.flac {fix}")
    try:
        wave, sr = sf.read(str(path) if isinstance(path, Path) else path, dtype="float32", always_2d=False)
    except Exception as e:
        raise UserError(f"cannot read audio {name}: {str(e).splitlines()[0][:120]}; remove or fix the file "
                        f"{fix}") from None
    long_enough(len(wave), f"audio file {name}", 1, rate, f"remove it {fix}")
    w = to_mono(wave, sr, rate)
    long_enough(len(w), f"audio file {name}", min_samples, rate, f"remove it or lower domain.patch_size[1] {fix}")
    return w


def long_enough(n: int, what: str, min_samples: int, rate: int, fix: str):
    """A clip of n samples at `rate` holds at least one sample and one patch (min_samples); else a UserError."""
    if n == 0:
        raise UserError(f"{what} is empty (0 samples); {fix}")
    if n < min_samples:
        raise UserError(f"{what} is {1000 * n / rate:.0f} ms long, shorter than one patch "
                        f"({1000 * min_samples / rate:.0f} ms); {fix}")


MEMORY = ("mono waveforms at domain.sample_rate: floats (or int16) [n, samples], or a list or Dataset of 1-D clips, "
          "as (clips, labels) for labels")


def memory_waves(obj, rate: int, min_samples: int) -> Files:
    """In-memory waveforms (MEMORY) -> a split read lazily as files are, each clip checked as a file's when read
    (`memory_clip`); a batch array's dtype and shape are checked here, and the first clip is read."""
    samples, labels = unpack(obj)
    if is_array(samples) and (samples.ndim != 2 or not is_wave(numpy(samples))):
        fix = {1: "one clip is x[None]", 3: "downmix the channels, x.mean(-1)"}.get(samples.ndim)
        raise UserError(f"data.path holds {describe(samples)}; the audio domain reads {MEMORY}: "
                        f"{fix or 'convert to float32 in [-1, 1]'}")
    if not (is_array(samples) or isinstance(samples, (list, torch.utils.data.Dataset))) or not len(samples):
        raise UserError(f"data.path holds {describe(samples)}; the audio domain reads {MEMORY}")
    split = memory_split(samples, labels, partial(memory_clip, rate=rate, min_samples=min_samples), "clip")
    split[0]  # a wrong kind of sample is said now, not in a loader worker
    return split


def is_wave(a: np.ndarray) -> bool:
    return a.dtype.kind == "f" or a.dtype == np.int16


def memory_clip(w, rate: int, min_samples: int, name: str) -> torch.Tensor:
    """One in-memory clip (1-D float or int16, at `rate`) -> float32 [samples]; anything else a UserError."""
    a = numpy(w) if is_array(w) or isinstance(w, list) else None
    if a is None or a.ndim != 1 or not is_wave(a):
        raise UserError(f"{name} is {describe(w)}; the audio domain reads {MEMORY}")
    long_enough(len(a), name, min_samples, rate, "drop it or lower domain.patch_size[1]")
    return as_float(a)


def fit_length(w: torch.Tensor, n: int, start: int | None = None) -> torch.Tensor:
    """Crop [samples] to n (from `start`, default centred) or zero-pad it on both sides."""
    if len(w) >= n:
        start = (len(w) - n) // 2 if start is None else start
        return w[start:start + n]
    left = (n - len(w)) // 2 if start is None else start
    return F.pad(w, (left, n - len(w) - left))


def mix_at_snr(signal: torch.Tensor, background: torch.Tensor, snr_db) -> torch.Tensor:
    """signal + background [.. samples] scaled so that 10 log10(P_signal / P_background) = snr_db (a number
    or [..], one per clip)."""
    p_sig = signal.pow(2).mean(-1, keepdim=True).clamp_min(1e-10)
    p_bg = background.pow(2).mean(-1, keepdim=True).clamp_min(1e-10)
    snr = torch.as_tensor(snr_db, dtype=signal.dtype, device=signal.device)[..., None]
    return signal + background * (p_sig / p_bg / 10 ** (snr / 10)).sqrt()


class AudioDomain:
    name = "audio"
    local_views = True  # multi-crop: windows of local_seconds

    def __init__(self, sample_rate: int = 16000, clip_seconds: float = 1.0, n_mels: int = 40, n_fft: int = 400,
                 hop: int = 160, f_min: float = 0.0, f_max: float | None = None, patch_size=(None, 2),
                 mask_mode: str = "patches", mask_ratio: float = 0.75, mask_band=(2, 5),
                 gain_db: float = 6.0, mix_p: float = 0.5, mix_clip_p: float = 0.5, snr_db=(5.0, 30.0),
                 shift_seconds: float = 0.1, freq_scale=(0.6, 1.5), time_scale=(0.6, 1.5),
                 pos_embed: str = "sincos", norm_pix_loss: bool = True, local_crops: int | None = None,
                 local_seconds: float | None = None, cache_dir: str | None = None, data=None, state: dict | None = None):
        if mask_mode not in ("patches", "bands"):
            raise UserError(f"domain.mask_mode must be patches or bands, got {mask_mode!r}")
        self.rate, self.clip = int(sample_rate), int(round(sample_rate * clip_seconds))
        self.n_mels, self.n_fft, self.hop, self.f_min, self.f_max = n_mels, n_fft, hop, f_min, f_max
        self.patch = (patch_size[0] or n_mels, patch_size[1])  # null frequency patch = whole frames
        self.mask_mode, self.mask_ratio, self.mask_band = mask_mode, mask_ratio, tuple(mask_band)
        self.gain_db, self.mix_p, self.mix_clip_p = gain_db, mix_p, mix_clip_p
        self.snr_db, self.shift = tuple(snr_db), int(round(shift_seconds * sample_rate))
        self.freq_scale, self.time_scale, self.norm_pix_loss = tuple(freq_scale), tuple(time_scale), norm_pix_loss
        self.cache_dir, self.data, self.pos_embed = cache_dir, data or {}, pos_embed
        self.frames = self.whole_patches(self.clip)
        if n_mels % self.patch[0] or self.frames == 0:
            raise UserError(f"domain.patch_size={list(self.patch)} must tile {n_mels} mel bins and fit in "
                            f"{self.clip // hop + 1} frames; pick a frequency patch that divides domain.n_mels")
        self.local_crops = local_crops
        self.local_clip = int(round(sample_rate * local_seconds)) if local_seconds else self.clip // 2
        self.local_frames = self.whole_patches(self.local_clip)
        if not 0 < self.local_clip <= self.clip or self.local_frames == 0:
            raise UserError(f"domain.local_seconds={local_seconds} must be positive, at most domain.clip_seconds, and "
                            f"hold one time patch ({self.patch[1] * hop / sample_rate:.3f} s)")
        self.mean = self.std = None
        self._splits, self.num_classes, self._mel = None, None, {}  # mel transforms by (device, dtype)
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
        path = self.data.get("path")
        if in_memory(path):
            splits = {"train": memory_waves(path, self.rate, self.min_samples)}  # unsplit, as a folder without train/
        elif not path:
            splits = self._spoken_words()
        else:
            kind, where = locate(path, "a folder of audio files or a saved HF dataset")
            splits = self._folder(where) if kind == "folder" else self._hf(str(where), from_disk=kind == "saved")
        self.num_classes = class_count(splits["train"])
        return splits

    def _spoken_words(self):
        from . import espeak
        cache = Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir() / "audio"
        d = espeak.spoken_words(cache, self.rate, self.clip / self.rate)
        test = d["test"]
        return {"train": Waves(torch.from_numpy(d["wave"][~test]), d["word"][~test]),
                "test": Waves(torch.from_numpy(d["wave"][test]), d["word"][test])}

    def whole_patches(self, samples: int) -> int:
        """Spectrogram frames of a clip of `samples`, cut to whole time patches."""
        return (samples // self.hop + 1) // self.patch[1] * self.patch[1]

    @property
    def min_samples(self) -> int:
        return self.patch[1] * self.hop  # one time patch

    def _folder(self, root: Path):
        skip_bad, out = bool(self.data.get("skip_bad", False)), {}
        for split, d in split_folders(root).items():
            files = sorted(f for f in d.rglob("*") if f.suffix.lower() in AUDIO_EXT | OTHER_AUDIO_EXT)
            if not any(f.suffix.lower() in AUDIO_EXT for f in files) and not (skip_bad and files):
                other = sorted({f.suffix for f in files})
                hint = f" (found {' '.join(other)}: convert to .flac or .wav)" if other else ""
                raise UserError(f"no audio files ({' '.join(sorted(AUDIO_EXT))}) under {d}{hint}; put audio "
                                f"files (optionally in class subfolders) there")
            labels, classes = labelled(files, d, out["train"].classes if out else None)
            out[split] = Files(files, labels, classes,
                               partial(read_audio, rate=self.rate, min_samples=self.min_samples), skip_bad)
        return out

    def _hf(self, path, from_disk: bool):
        """An HF `datasets` audio dataset, each row decoded with soundfile (no torchcodec needed) when its item is
        asked for (rows.Rows): the split stays memory-mapped, and the labels come from their column alone."""
        splits = hf_splits(path, from_disk)
        import datasets
        feats = splits["train"].features
        col = next((k for k, v in feats.items() if isinstance(v, datasets.Audio)), None)
        if col is None:
            raise UserError(f"HF dataset at {path} has no Audio column (columns: {list(feats)})")
        read = partial(read_audio, rate=self.rate, min_samples=self.min_samples)
        return {k: row_split(ds, col, datasets.Audio(decode=False), str(path), read, label_column(feats),
                             bool(self.data.get("skip_bad", False))) for k, ds in splits.items()}

    def _fit_stats(self, ds):
        """Per-mel-bin mean and std of the log-mel features of (up to 1024) training clips."""
        idx = torch.linspace(0, len(ds) - 1, min(len(ds), 1024)).long().tolist()
        m = torch.stack([self.log_mel(fit_length(ds[i]["x"], self.clip)) for i in idx])  # [n mel frames]
        self.mean = m.mean((0, 2)).tolist()
        self.std = m.std((0, 2)).clamp_min(1e-3).tolist()

    def state(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    def load_state(self, s: dict):
        self.mean, self.std = s["mean"], s["std"]

    # ---- features -------------------------------------------------------------------------------
    def log_mel(self, w: torch.Tensor, frames: int | None = None) -> torch.Tensor:
        """[.. samples] -> [.. mel frames] log-mel, cut to whole time patches (`frames`, default the clip's), on w's
        device."""
        key = (w.device, w.dtype)
        if key not in self._mel:
            import torchaudio
            self._mel[key] = torchaudio.transforms.MelSpectrogram(
                self.rate, n_fft=self.n_fft, hop_length=self.hop, n_mels=self.n_mels, f_min=self.f_min,
                f_max=self.f_max).to(w.device, w.dtype)
        return (self._mel[key](w) + 1e-6).log()[..., :frames or self.frames]

    def features(self, w: torch.Tensor, frames: int | None = None) -> torch.Tensor:
        """[b samples] -> normalized log-mel [b 1 mel frames]: the model input."""
        mean, std = (torch.tensor(v, dtype=w.dtype, device=w.device)[:, None] for v in (self.mean, self.std))
        return ((self.log_mel(w, frames) - mean) / std).unsqueeze(1)

    def preprocess(self, raw) -> torch.Tensor:
        """Waveforms [b samples] (float in [-1, 1] or int16) at domain.sample_rate -> model input; longer
        or shorter clips are centre-cropped or zero-padded to domain.clip_seconds."""
        x = as_float(raw) if not torch.is_tensor(raw) or raw.dtype == torch.int16 else raw.float()
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise UserError(f"audio batch must be waveforms [batch, samples] at {self.rate} Hz (mono), got shape "
                            f"{tuple(x.shape)}; downmix channels first (x.mean(1))")
        return self.features(x if x.shape[1] == self.clip else torch.stack([fit_length(w, self.clip) for w in x]))

    def eval_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(fit_length(x, self.clip)[None])[0]

    # ---- views ----------------------------------------------------------------------------------
    def views(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2, n_local: int = 0) -> list[torch.Tensor]:
        """x float [samples] -> n_global views [1 mel frames] (BYOL-A style; no reversal, no flips), then local
        views: the same augmentations of shorter windows [1 mel local_frames]."""
        return sample_views(self, self.draw(x, rng, n_global, n_local))

    def _crop(self, w, rng, n: int | None = None):
        """A random window of n samples (default: the clip); short clips land at a random offset in the padding."""
        n = n or self.clip
        slack = abs(len(w) - n)
        start = int(torch.randint(0, slack + 1, (), generator=rng))
        return fit_length(w, n, start)

    def draw(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2, n_local: int = 0) -> dict:
        """x float [samples] -> per view: a crop (clip-length, or local_seconds for a local view, zero-padded to the
        clip length so views stack), its gain, a background (another training clip or white noise) with its SNR and
        whether it is mixed in, a time shift, and a spectrogram window (pitch and tempo) as [top left height width]
        in spectrogram coordinates (past its edges: zeros)."""
        train = self._splits["train"] if self._splits else None
        n_local = n_local if self.local_crops is None else self.local_crops
        wave, bg, gain, mix, snr, shift, box = [], [], [], [], [], [], []
        for v in range(n_global + n_local):  # per view, in the order the per-sample augmentation drew them
            n, ft = (self.clip, self.frames) if v < n_global else (self.local_clip, self.local_frames)
            fm = self.n_mels
            wave.append(fit_length(self._crop(x, rng, n), self.clip, 0))
            gain.append(A.uniform(rng, -self.gain_db, self.gain_db))
            mixed = A.coin(rng, self.mix_p)
            noise = torch.zeros(n, dtype=torch.float32)
            if mixed and train is not None and A.coin(rng, self.mix_clip_p):
                noise = self._crop(train[int(torch.randint(0, len(train), (), generator=rng))]["x"], rng, n)
            elif mixed:
                noise = torch.randn(n, generator=rng)
            bg.append(fit_length(noise.float(), self.clip, 0))
            mix.append(mixed)
            snr.append(A.uniform(rng, *self.snr_db) if mixed else 0.0)
            shift.append(int(torch.randint(-self.shift, self.shift + 1, (), generator=rng)) if self.shift else 0)
            h, w = round(fm * A.uniform(rng, *self.freq_scale)), round(ft * A.uniform(rng, *self.time_scale))
            top = int(torch.randint(0, max(h, fm) - h + 1, (), generator=rng))
            left = int(torch.randint(0, max(w, ft) - w + 1, (), generator=rng))
            box.append([top - max(h - fm, 0) // 2, left - max(w - ft, 0) // 2, h, w])  # spectrogram coordinates
        return {"wave": torch.stack(wave), "bg": torch.stack(bg), "gain": torch.tensor(gain), "mix": torch.tensor(mix),
                "snr": torch.tensor(snr), "shift": torch.tensor(shift), "box": torch.tensor(box, dtype=torch.float32),
                "local": torch.arange(n_global + n_local) >= n_global}

    def apply(self, d: dict) -> list[torch.Tensor]:
        """draw's tensors for a batch [b v ...], on any device -> the global views [b 1 mel frames], then the local
        ones [b 1 mel local_frames]."""
        n_views, n_global = d["local"].shape[1], int((~d["local"][0]).sum())
        views = []
        for part, n, frames in ((slice(0, n_global), self.clip, self.frames),
                                (slice(n_global, n_views), self.local_clip, self.local_frames)):
            if part.stop > part.start:
                views += self._apply(d, part, n, frames)
        return views

    def _apply(self, d: dict, idx: slice, n: int, ft: int) -> list[torch.Tensor]:
        """The views idx of n samples: gain, background at its SNR, shift (zero fill), log-mel, then the window
        resized back to the spectrogram's size [mel ft]."""
        w = d["wave"][:, idx, :n] * 10 ** (d["gain"][:, idx, None] / 20)  # [b v samples]
        w = torch.where(d["mix"][:, idx, None], mix_at_snr(w, d["bg"][:, idx, :n], d["snr"][:, idx]), w)
        t = torch.arange(n, device=w.device) - d["shift"][:, idx, None]  # a delay of s: out[t] = w[t - s]
        w = torch.where((t >= 0) & (t < n), w.gather(-1, t.clamp(0, n - 1)), torch.zeros_like(w))
        b, v = w.shape[:2]
        spec = self.features(w.reshape(b * v, -1), ft)  # [(b v) 1 mel frames]
        fm = self.n_mels
        top, left, h, wd = d["box"][:, idx].reshape(b * v, 4).long().unbind(-1)
        gy, gx = A.grid_positions(top, h, fm, fm, spec.dtype), A.grid_positions(left, wd, ft, ft, spec.dtype)
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)  # [(b v) mel frames 2]
        # bilinear over the window; past the spectrogram's edges it reads 0 (the mean after normalizing)
        out = F.grid_sample(spec, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return list(out.view(b, v, 1, fm, ft).unbind(1))

    def eval_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation sends the clip-length waveform; `preprocess` makes the log-mel on the device."""
        return fit_length(x, self.clip)

    # ---- tokens and masking ---------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        return self.n_mels // self.patch[0], self.frames // self.patch[1]

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def target_dim(self) -> int:
        return self.patch[0] * self.patch[1]

    def embedder(self, dim: int) -> nn.Module:
        return PatchEmbed(1, (self.n_mels, self.frames), self.patch, dim, self.pos_embed)

    def mask(self, batch_size: int, rng: torch.Generator):
        if self.mask_mode == "bands":
            return band_mask(batch_size, self.grid, self.mask_ratio, rng, self.mask_band)
        return random_mask(batch_size, self.num_tokens, self.mask_ratio, rng)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """[b 1 mel frames] -> normalized spectrogram patches [b n (pf pt)]."""
        return patchify(x, self.patch, self.norm_pix_loss)

    def reconstruction_loss(self, pred, target, masked):
        return masked_mse(pred, target, masked)
