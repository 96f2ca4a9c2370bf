"""Views of one step, in two halves: per-sample draws (in loader workers) of which steps the views show — temporal
neighbours in the same episode, never across its boundary, then the next steps with the actions taken — and of
each view's random parameters; and the batched apply on the device: intensity and DrQ's shift for frames (every
frame of a stack moves alike), gaussian noise for state vectors."""
import numpy as np
import torch
import torch.nn.functional as F


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


def view_steps(i: int, first: int, last: int, offsets: tuple[int, int], n_global: int, n_future: int,
               rng: torch.Generator) -> list[int]:
    """The steps step i's views show: i itself, n_global - 1 temporal neighbours, then i+1..i+n_future (the
    episode's last step past its end)."""
    steps = [i] + [temporal_neighbour(i, first, last, offsets, rng) for _ in range(n_global - 1)]
    return steps + [min(i + k, last) for k in range(1, n_future + 1)]


def future_actions(action: np.ndarray, i: int, last: int, n_future: int, discrete: bool) -> dict:
    """The action taken at each step from i on (it leads to the next view): `action` [K] ids or [K d] floats, and
    `valid` [K] (step i+k is still in the episode)."""
    acts = np.asarray(action[[min(i + k, last) for k in range(n_future)]])
    acts = acts.astype(np.int64) if discrete else acts.astype(np.float32).reshape(n_future, -1)
    return {"action": torch.from_numpy(acts), "valid": torch.tensor([i + k <= last for k in range(1, n_future + 1)])}


def noise_draw(n_views: int, dim: int, noise_std: float, rng: torch.Generator) -> dict:
    """Per view of a state vector: its gaussian noise `noise` [v D] (zeros when noise_std is 0)."""
    return {"noise": torch.stack([torch.randn(dim, generator=rng) if noise_std else torch.zeros(dim)
                                  for _ in range(n_views)])}


def frame_draw(n_views: int, intensity: float, shift: int, rng: torch.Generator) -> dict:
    """Per view of a frame: an intensity factor `gain` [v] (1 + intensity x a normal clipped to 2 sigma) and a
    shift (dy, dx) `shift` [v 2] in 0..2 shift, drawn in that order view after view."""
    gain, offsets = [], []
    for _ in range(n_views):
        gain.append(1 + intensity * float(torch.randn((), generator=rng).clamp(-2, 2)) if intensity > 0 else 1.0)
        offsets.append([int(torch.randint(0, 2 * shift + 1, (), generator=rng)) for _ in range(2)]
                       if shift > 0 else [0, 0])
    return {"gain": torch.tensor(gain), "shift": torch.tensor(offsets)}


def apply_views(d: dict, scaled, normalize, vector: bool, noise_std: float, pad: int) -> list[torch.Tensor]:
    """The drawn tensors of a batch [b v ...] -> the views [b c h w] (or [b D]): `scaled` to [0, 1], then
    intensity and the replicate-pad shift by `pad` for frames, `normalize`d, plus noise_std x the noise for
    vectors (after normalizing: the noise is in units of each feature's deviation)."""
    b, v = d["obs"].shape[:2]
    x = scaled(d["obs"].flatten(0, 1))  # [(b v) c h w] in [0, 1], or [(b v) D]
    if vector:
        x = normalize(x) + noise_std * d["noise"].flatten(0, 1).to(x.dtype)
        return list(x.view(b, v, -1).unbind(1))
    x = shifted(x * d["gain"].flatten().to(x.dtype).view(-1, 1, 1, 1), d["shift"].flatten(0, 1), pad)
    return list(normalize(x).view(b, v, *x.shape[1:]).unbind(1))
