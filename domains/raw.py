"""The raw-input baseline's features (a domain's `raw_features`): what a user would try before any encoder, as pure
functions of an evaluation batch. The engine scores them with the same kNN and downstream metrics as the encoder
(multissl.baseline.raw_metrics)."""
import functools

import torch
import torch.nn.functional as F

SIDE = 32  # raw pixels are compared at most 32 x 32 per image or frame, as the kNN-on-pixels baselines of the field
PROJECTED = 512  # width of the random projection of large raw inputs (frames)


def pixels(x: torch.Tensor, side: int = SIDE) -> torch.Tensor:
    """uint8 images [b c h w] or clips [b t c h w] -> [b f] pixels in [0, 1], area-averaged to at most side x side."""
    lead = x.shape[:-3]  # [b] or [b t]
    h, w = x.shape[-2:]
    r = (min(h, side), min(w, side))
    small = F.interpolate(x.reshape(-1, *x.shape[-3:]).float() / 255, size=r, mode="area")  # [(b t) c r r]
    return small.reshape(lead[0], -1)


@functools.lru_cache(maxsize=4)
def _directions(f: int, dim: int, seed: int) -> torch.Tensor:
    """[f dim] Gaussian directions scaled by 1/sqrt(dim), the same for a width and seed on every machine."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(f, dim, generator=g) / dim ** 0.5


def projected(x: torch.Tensor, dim: int = PROJECTED, seed: int = 0) -> torch.Tensor:
    """[b ...] -> [b f] the flattened input, or its random projection to `dim` (fixed by `seed`) when f > dim:
    Johnson-Lindenstrauss keeps the distances a kNN or a linear probe reads, at a fraction of the width."""
    flat = x.flatten(1).float()
    return flat if flat.shape[1] <= dim else flat @ _directions(flat.shape[1], dim, seed)


def tf_idf(ids: torch.Tensor, pad: torch.Tensor | None, idf: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """ids [b n] token ids (pad [b n] True = padding), idf [V], skip [V] True for ids not counted (special tokens)
    -> [b V] TF-IDF rows with sublinear counts, 1 + log(count), unit length (empty rows stay 0)."""
    keep = ~skip[ids] if pad is None else ~skip[ids] & ~pad
    counts = torch.zeros(ids.shape[0], len(idf)).scatter_add_(1, ids, keep.float())  # [b V]
    tf = torch.where(counts > 0, 1 + counts.clamp_min(1).log(), torch.zeros(()))
    return F.normalize(tf * idf, dim=1)


def idf_of(docs_ids, vocab: int) -> torch.Tensor:
    """Smoothed inverse document frequency [vocab] of the documents' ids (an iterable of id arrays), as
    scikit-learn's: 1 + log((1 + n) / (1 + df))."""
    df, n = torch.zeros(vocab), 0
    for ids in docs_ids:
        df[torch.as_tensor(ids, dtype=torch.long).unique()] += 1
        n += 1
    return 1 + torch.log((1 + n) / (1 + df))


def table_rows(x: torch.Tensor, vocab_sizes: list[int]) -> torch.Tensor:
    """Encoded rows [b F] (numbers, NaN when missing; category ids) -> [b f]: each number (0 when missing) and a
    missing flag, each category one-hot over its vocabulary."""
    cols = []
    for j, v in enumerate(vocab_sizes):
        c = x[:, j]
        if v == 0:
            missing = torch.isnan(c)
            cols += [torch.where(missing, torch.zeros(()), c.float())[:, None], missing.float()[:, None]]
        else:
            cols.append(F.one_hot(c.long().clamp(0, v - 1), v).float())
    return torch.cat(cols, dim=1)
