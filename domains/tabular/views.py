"""Tabular views: SCARF corruption, SubTab-style feature subsets, gaussian noise, and the marginal draws
that SCARF and VIME replace values with. Rows are encoded floats [F]; all randomness from rng, drawn per
sample (`draw_view`) and applied to a batch at once (`apply_views`)."""
import torch


def count(rate: float, n: int) -> int:
    return int(round(rate * n))


def pick(n: int, k: int, rng: torch.Generator) -> torch.Tensor:
    """k distinct feature indices out of n."""
    return torch.randperm(n, generator=rng)[:k]


def marginal_draws(train: torch.Tensor, cols: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """train [n F], cols [k] -> [k]: each column's value in its own random training row, a sample of
    that column's empirical marginal (SCARF, VIME)."""
    rows = torch.randint(0, train.shape[0], (len(cols),), generator=rng)
    return train[rows, cols]


def draw_view(n_features: int, n_rows: int, scarf: float, subset: float, noise: bool, rng) -> dict:
    """One view's parameters [F]: SCARF's exactly round(scarf F) replaced features and their donor training
    rows, SubTab's round(subset F) hidden features, and a standard normal noise (zeros when off)."""
    out = {"replace": torch.zeros(n_features, dtype=torch.bool), "donor": torch.zeros(n_features, dtype=torch.long),
           "hide": torch.zeros(n_features, dtype=torch.bool), "noise": torch.zeros(n_features, dtype=torch.float32)}
    if scarf:
        cols = pick(n_features, count(scarf, n_features), rng)
        out["replace"][cols], out["donor"][cols] = True, torch.randint(0, n_rows, (len(cols),), generator=rng)
    if subset:
        out["hide"][pick(n_features, count(subset, n_features), rng)] = True
    if noise:
        out["noise"] = torch.randn(n_features, generator=rng, dtype=torch.float32)
    return out


def apply_views(x, train, missing, numeric, replace, donor, hide, noise, std: float) -> torch.Tensor:
    """x [b F] rows, train [n F], missing [F] (each feature's encoded "missing"), numeric [F] bool; the view
    parameters [b v F] -> views [b v F]: SCARF replacement by the donor rows' values, then the hidden subset
    set to missing, then noise (in standard deviations) on the present numeric features."""
    x = x[:, None].expand_as(noise)
    x = torch.where(replace, train[donor, torch.arange(x.shape[-1], device=x.device)], x)
    x = torch.where(hide, missing, x)
    return torch.where(numeric & ~x.isnan(), x + std * noise.to(x.dtype), x)
