"""Masks are index tensors (I-JEPA style): `keep` [b k] and `masked` [b m], the same k and m for every
sample so masked objectives can drop tokens. Policies differ per domain; the format does not."""
import torch


def split_indices(scores: torch.Tensor, n_keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [b n]: lower = keep. Returns sorted (keep [b n_keep], masked [b n - n_keep])."""
    order = scores.argsort(dim=1)
    keep, masked = order[:, :n_keep], order[:, n_keep:]
    return keep.sort(1).values, masked.sort(1).values


def random_mask(batch_size: int, n_tokens: int, ratio: float, rng: torch.Generator):
    """MAE's uniform random masking: round(ratio * n) tokens masked per sample, at least one kept."""
    n_mask = min(max(int(round(ratio * n_tokens)), 1), n_tokens - 1)
    return split_indices(torch.rand(batch_size, n_tokens, generator=rng), n_tokens - n_mask)


def band_mask(batch_size: int, grid: tuple[int, int], ratio: float, rng: torch.Generator,
              max_band: tuple[int, int] = (2, 3)):
    """SpecAugment-style masking on a [rows cols] token grid (rows = frequency, cols = time): whole
    frequency and time bands of random width, alternately, until they cover round(ratio * n) tokens.
    Earlier bands are masked first and only the last one may be cut short, so every sample masks
    exactly the same count."""
    rows, cols = grid
    n = rows * cols
    n_mask = min(max(int(round(ratio * n)), 1), n - 1)
    rounds = 4 * (rows + cols)
    axes = [a for a, size in ((0, rows), (1, cols)) if size > 1]  # a 1-token axis has no bands (frame tokens)
    scores = torch.rand(batch_size, rows, cols, generator=rng)  # in [0, 1): ties within one band
    for b in range(batch_size):
        covered = torch.zeros(rows, cols, dtype=torch.bool)
        for i in range(rounds):  # alternate frequency / time bands
            axis = axes[i % len(axes)]
            size, max_w = grid[axis], max_band[axis]
            w = int(torch.randint(1, min(max_w, size) + 1, (), generator=rng))
            start = int(torch.randint(0, size - w + 1, (), generator=rng))
            band = torch.zeros_like(covered)
            if axis == 0:
                band[start:start + w, :] = True
            else:
                band[:, start:start + w] = True
            scores[b][band & ~covered] += rounds - i  # the earlier the band, the sooner it is masked
            covered |= band
            if covered.sum() >= n_mask:
                break
    return split_indices(scores.flatten(1), n - n_mask)  # keeps the lowest priorities
