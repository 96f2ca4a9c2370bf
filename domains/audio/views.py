"""Audio views (BYOL-A style: no reversal, no flips) in two halves: per-sample draws in the loader workers (a crop,
its gain, a background at an SNR, a time shift and a spectrogram window for pitch and tempo) and a batched apply on
the device that mixes, shifts, makes the log-mel and resamples the window."""
import torch
import torch.nn.functional as F

from .. import augment as A
from .spectrogram import fit_length


def crop(w: torch.Tensor, rng: torch.Generator, n: int) -> torch.Tensor:
    """A random window of n samples; short clips land at a random offset in the padding."""
    slack = abs(len(w) - n)
    start = int(torch.randint(0, slack + 1, (), generator=rng))
    return fit_length(w, n, start)


def mix_at_snr(signal: torch.Tensor, background: torch.Tensor, snr_db) -> torch.Tensor:
    """signal + background [.. samples] scaled so that 10 log10(P_signal / P_background) = snr_db (a number
    or [..], one per clip)."""
    p_sig = signal.pow(2).mean(-1, keepdim=True).clamp_min(1e-10)
    p_bg = background.pow(2).mean(-1, keepdim=True).clamp_min(1e-10)
    snr = torch.as_tensor(snr_db, dtype=signal.dtype, device=signal.device)[..., None]
    return signal + background * (p_sig / p_bg / 10 ** (snr / 10)).sqrt()


def draw_views(x: torch.Tensor, rng: torch.Generator, shapes: list, n_global: int, *, clip: int, n_mels: int,
               background, gain_db: float, mix_p: float, mix_clip_p: float, snr_db: tuple, shift: int,
               freq_scale: tuple, time_scale: tuple) -> dict:
    """x float [samples] -> per view of shapes[v] = (samples, frames): a crop zero-padded to `clip` samples so views
    stack, its gain in dB, a background (a crop of a random clip of `background`, a Dataset or None, or white noise)
    with its SNR and whether it is mixed in, a shift in samples, and a spectrogram window [top left height width] in
    spectrogram coordinates (past its edges: zeros); the views after the first n_global are local."""
    wave, bg, gain, mix, snr, shifts, box = [], [], [], [], [], [], []
    for n, ft in shapes:  # per view, in the order the per-sample augmentation drew them
        wave.append(fit_length(crop(x, rng, n), clip, 0))
        gain.append(A.uniform(rng, -gain_db, gain_db))
        mixed = A.coin(rng, mix_p)
        noise = torch.zeros(n, dtype=torch.float32)
        if mixed and background is not None and A.coin(rng, mix_clip_p):
            noise = crop(background[int(torch.randint(0, len(background), (), generator=rng))]["x"], rng, n)
        elif mixed:
            noise = torch.randn(n, generator=rng)
        bg.append(fit_length(noise.float(), clip, 0))
        mix.append(mixed)
        snr.append(A.uniform(rng, *snr_db) if mixed else 0.0)
        shifts.append(int(torch.randint(-shift, shift + 1, (), generator=rng)) if shift else 0)
        box.append(spectrogram_window(rng, n_mels, ft, freq_scale, time_scale))
    return {"wave": torch.stack(wave), "bg": torch.stack(bg), "gain": torch.tensor(gain), "mix": torch.tensor(mix),
            "snr": torch.tensor(snr), "shift": torch.tensor(shifts), "box": torch.tensor(box, dtype=torch.float32),
            "local": torch.arange(len(shapes)) >= n_global}


def spectrogram_window(rng: torch.Generator, fm: int, ft: int, freq_scale: tuple, time_scale: tuple) -> list:
    """A window of the [fm ft] spectrogram scaled by a random factor per axis, as [top left height width]; one
    larger than the spectrogram is centred on it, so its edges lie past the spectrogram's."""
    h, w = round(fm * A.uniform(rng, *freq_scale)), round(ft * A.uniform(rng, *time_scale))
    top = int(torch.randint(0, max(h, fm) - h + 1, (), generator=rng))
    left = int(torch.randint(0, max(w, ft) - w + 1, (), generator=rng))
    return [top - max(h - fm, 0) // 2, left - max(w - ft, 0) // 2, h, w]


def apply_views(d: dict, features, groups: list) -> list[torch.Tensor]:
    """draw's tensors for a batch [b v ...], on any device -> the views of each group (n samples, ft frames) in
    turn: global views [b 1 mel frames], then local ones [b 1 mel local_frames]. features(w [b n], ft) -> the
    normalized log-mel [b 1 mel ft]."""
    n_views, n_global = d["local"].shape[1], int((~d["local"][0]).sum())
    views = []
    for part, (n, ft) in zip((slice(0, n_global), slice(n_global, n_views)), groups):
        if part.stop > part.start:
            views += apply_part(d, part, n, ft, features)
    return views


def apply_part(d: dict, idx: slice, n: int, ft: int, features) -> list[torch.Tensor]:
    """The views idx of n samples: gain, background at its SNR, shift (zero fill), log-mel, then the window
    resized back to the spectrogram's size [mel ft]."""
    w = d["wave"][:, idx, :n] * 10 ** (d["gain"][:, idx, None] / 20)  # [b v samples]
    w = torch.where(d["mix"][:, idx, None], mix_at_snr(w, d["bg"][:, idx, :n], d["snr"][:, idx]), w)
    w = shifted(w, d["shift"][:, idx])
    b, v = w.shape[:2]
    spec = features(w.reshape(b * v, -1), ft)  # [(b v) 1 mel frames]
    fm = spec.shape[-2]
    return list(window(spec, d["box"][:, idx].reshape(b * v, 4), ft).view(b, v, 1, fm, ft).unbind(1))


def shifted(w: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """w [b v n] delayed by shift [b v] samples (negative: advanced), zeros where it moved in: out[t] = w[t - s]."""
    n = w.shape[-1]
    t = torch.arange(n, device=w.device) - shift[..., None]
    return torch.where((t >= 0) & (t < n), w.gather(-1, t.clamp(0, n - 1)), torch.zeros_like(w))


def window(spec: torch.Tensor, box: torch.Tensor, ft: int) -> torch.Tensor:
    """spec [B 1 mel ft], box [B 4] -> each spectrogram's window resampled to [B 1 mel ft]: bilinear over the
    window; past the spectrogram's edges it reads 0 (the mean after normalizing)."""
    fm = spec.shape[-2]
    top, left, h, wd = box.long().unbind(-1)
    gy, gx = A.grid_positions(top, h, fm, fm, spec.dtype), A.grid_positions(left, wd, ft, ft, spec.dtype)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)  # [B mel frames 2]
    return F.grid_sample(spec, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
