"""Waveforms -> the model input: clips cut or padded to one length, log-mel spectrograms cut to whole time
patches, normalized per mel bin with the training split's statistics [b 1 mel frames]; or, for models that read
the waveform (domain.input=waveform), the samples themselves [b 1 samples] in frames of [window hop] samples."""
import torch
import torch.nn.functional as F

from multissl.errors import UserError

from .sources import as_float


def fit_length(w: torch.Tensor, n: int, start: int | None = None) -> torch.Tensor:
    """Crop [samples] to n (from `start`, default centred) or zero-pad it on both sides."""
    if len(w) >= n:
        start = (len(w) - n) // 2 if start is None else start
        return w[start:start + n]
    left = (n - len(w)) // 2 if start is None else start
    return F.pad(w, (left, n - len(w) - left))


def whole_patches(samples: int, hop: int, time_patch: int) -> int:
    """Spectrogram frames of a clip of `samples`, cut to whole time patches."""
    return (samples // hop + 1) // time_patch * time_patch


def frame_count(samples: int, window: int, hop: int) -> int:
    """Frames of `window` samples every `hop` in a clip of `samples` (a strided convolution's outputs, no padding)."""
    return (samples - window) // hop + 1 if samples >= window else 0


def frame_patches(x: torch.Tensor, window: int, hop: int, normalize: bool) -> torch.Tensor:
    """Waveforms [b 1 samples] -> their frames [b n window] in token order; `normalize` standardizes each (as
    patchify does a spectrogram patch)."""
    t = x[:, 0].unfold(-1, window, hop)
    if normalize:
        t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    return t


class LogMel:
    """[.. samples] -> log-mel [.. mel frames], with torchaudio's transform built once per (device, dtype)."""

    def __init__(self, rate: int, n_fft: int, hop: int, n_mels: int, f_min: float, f_max: float | None):
        self.rate, self.n_fft, self.hop, self.n_mels, self.f_min, self.f_max = rate, n_fft, hop, n_mels, f_min, f_max
        self._transforms = {}

    def __call__(self, w: torch.Tensor, frames: int) -> torch.Tensor:
        key = (w.device, w.dtype)
        if key not in self._transforms:
            import torchaudio
            self._transforms[key] = torchaudio.transforms.MelSpectrogram(
                self.rate, n_fft=self.n_fft, hop_length=self.hop, n_mels=self.n_mels, f_min=self.f_min,
                f_max=self.f_max).to(w.device, w.dtype)
        return (self._transforms[key](w) + 1e-6).log()[..., :frames]


def normalized(spec: torch.Tensor, mean: list, std: list) -> torch.Tensor:
    """log-mel [b mel frames] -> [b 1 mel frames], each mel bin standardized with the training statistics."""
    mean, std = (torch.tensor(v, dtype=spec.dtype, device=spec.device)[:, None] for v in (mean, std))
    return ((spec - mean) / std).unsqueeze(1)


def mel_stats(ds, log_mel, clip: int) -> tuple[list, list]:
    """Per-mel-bin mean and std of the log-mel features (`log_mel`: [samples] -> [mel frames]) of up to 1024
    training clips spread evenly over the split, each cut or padded to `clip` samples."""
    idx = torch.linspace(0, len(ds) - 1, min(len(ds), 1024)).long().tolist()
    m = torch.stack([log_mel(fit_length(ds[i]["x"], clip)) for i in idx])  # [n mel frames]
    return m.mean((0, 2)).tolist(), m.std((0, 2)).clamp_min(1e-3).tolist()


def waveform_batch(raw, rate: int, clip: int) -> torch.Tensor:
    """A user's waveforms [b samples] or [samples] (float in [-1, 1] or int16) -> float [b clip]: longer or shorter
    clips centre-cropped or zero-padded."""
    x = as_float(raw) if not torch.is_tensor(raw) or raw.dtype == torch.int16 else raw.float()
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise UserError(f"audio batch must be waveforms [batch, samples] at {rate} Hz (mono), got shape "
                        f"{tuple(x.shape)}; downmix channels first (x.mean(1))")
    return x if x.shape[1] == clip else torch.stack([fit_length(w, clip) for w in x])
