"""Held-out episodes and the rl domain's own metric on them: how much of the true state the frozen representation
holds, as the R^2 of a linear (ridge) probe fit on training episodes and scored on held-out ones."""
import numpy as np

from ..probes import state_r2
from .buffer import Steps

HEADLINE = ("state_r2_mean", True, False)  # the probe's mean R^2 (not a proportion of held-out steps)


def held_out(episode: np.ndarray, test_fraction: float) -> dict[str, Steps]:
    """Episode id per step [N] -> {"train": Steps, "test": Steps of the held-out episodes (when there are any)}:
    test_fraction of the episodes, at least one when there are two or more; a fixed draw (seed 0, not the run
    seed), so every run and every process holds out the same ones."""
    n_ep = int(episode[-1]) + 1
    n_test = min(max(int(round(test_fraction * n_ep)), 1), n_ep - 1) if test_fraction > 0 else 0
    test_eps = np.random.default_rng(0).permutation(n_ep)[:n_test]
    held = np.isin(episode, test_eps)
    out = {"train": Steps(np.flatnonzero(~held))}
    if held.any():
        out["test"] = Steps(np.flatnonzero(held))
    return out


def spread(part: Steps, limit: int | None) -> Steps:
    """At most `limit` steps of a split, evenly spread over it (None: all of them)."""
    return Steps(part.index[np.linspace(0, len(part) - 1, min(limit, len(part))).astype(int)]) if limit else part


def state_probe(embed, train: Steps, test: Steps, state: np.ndarray, names: list[str], alpha: float,
                limit: int | None) -> dict:
    """embed(steps) -> [n d]; state [N S] of every step of the buffer -> `state_r2/<name>` per state variable and
    their mean `state_r2_mean`, on `limit` steps per split."""
    tr, te = spread(train, limit), spread(test, limit)
    r2 = state_r2(embed(tr).numpy(), state[tr.index.numpy()], embed(te).numpy(), state[te.index.numpy()], alpha)
    return {**{f"state_r2/{k}": float(v) for k, v in zip(names, r2)}, "state_r2_mean": float(r2.mean())}
