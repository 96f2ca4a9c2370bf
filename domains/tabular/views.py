"""Tabular views: SCARF corruption, SubTab-style feature subsets, gaussian noise, and the marginal draws
that SCARF and VIME replace values with. x float [F] encoded rows; all randomness from rng."""
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


def scarf_corrupt(x: torch.Tensor, train: torch.Tensor, rate: float, rng: torch.Generator) -> torch.Tensor:
    """SCARF: exactly round(rate F) features replaced by marginal draws."""
    cols = pick(len(x), count(rate, len(x)), rng)
    out = x.clone()
    out[cols] = marginal_draws(train, cols, rng)
    return out


def hide_subset(x: torch.Tensor, missing: torch.Tensor, rate: float, rng: torch.Generator) -> torch.Tensor:
    """SubTab-style feature subset: exactly round(rate F) features set to their missing value [F]."""
    cols = pick(len(x), count(rate, len(x)), rng)
    out = x.clone()
    out[cols] = missing[cols]
    return out


def numeric_noise(x: torch.Tensor, numeric: torch.Tensor, std: float, rng: torch.Generator) -> torch.Tensor:
    """Gaussian noise (in standard deviations) on the present numeric features; numeric bool [F]."""
    noisy = x + std * torch.randn(len(x), generator=rng)
    return torch.where(numeric & ~x.isnan(), noisy, x)
