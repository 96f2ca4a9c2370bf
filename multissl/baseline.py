"""The untrained encoder next to the trained one: at the end of a run the same held-out metrics of the encoder's
initial weights (the same seed's, so the comparison is paired), logged as `untrained/<metric>`, and one line that
says whether pretraining helped on this data. Scoring it costs a forward pass over the evaluation samples."""
import copy
import math

from multissl import monitor
from multissl.contracts import Downstream, optional


def snapshot(encoder):
    """A copy of the encoder as it is now (before the first step: its initial weights), on the CPU — taken before
    the engine shards or compiles the encoder it trains."""
    return copy.deepcopy(encoder).cpu()


def untrained_metrics(init, domain, train_set, test_set, device, knn_k: int, knn_temperature: float,
                      limit: int | None) -> dict:
    """kNN accuracy, RankMe and the domain's own downstream metrics of `init`, the encoder's snapshot."""
    fresh = init.to(device).eval()
    train_set, test_set = monitor.eval_sets(train_set, test_set, limit)  # the samples the trained encoder had
    out = monitor.heldout_metrics(fresh, domain, train_set, test_set, device, knn_k, knn_temperature)[0]
    out |= monitor.domain_metrics(fresh, domain, device, monitor.downstream_cap(limit))
    return {f"untrained/{k}": v for k, v in out.items()}


def verdict(metrics: dict, domain, n_heldout: int | None) -> str | None:
    """One line: the domain's headline metric (its `headline`) trained vs untrained, and whether pretraining helped.
    For a proportion (an accuracy over n_heldout samples) a gap within two standard errors of the difference of two
    proportions, sqrt(2 p (1 - p) / n), is called no clear difference; other metrics are judged on their sign."""
    key, higher, proportion = optional(domain, Downstream, "headline")
    if key not in metrics or f"untrained/{key}" not in metrics:
        return None
    new, old = metrics[key], metrics[f"untrained/{key}"]
    gain = (new - old) if higher else (old - new)  # > 0: better
    band = None
    if proportion and n_heldout:
        p = min(max((new + old) / 2, 0.0), 1.0)
        band = 2 * math.sqrt(2 * p * (1 - p) / n_heldout)
    if band is not None and abs(gain) <= band:
        word = "no clear difference from pretraining"
    else:
        word = "pretraining helped" if gain > 0 else "pretraining did not help"
    noise = (f"; gaps within ±{band:.4f}, two standard errors on {n_heldout} held-out samples, are noise"
             if band is not None else "; one held-out split: compare seeds before trusting a small gap")
    return (f"{word} on this data: {key} {new:.4f}, untrained encoder {old:.4f} "
            f"({new - old:+.4f}, {'higher' if higher else 'lower'} is better{noise})")


def table(metrics: dict) -> list[str]:
    """The metrics that have an untrained counterpart, side by side: `metric  trained  untrained`."""
    keys = [k for k in metrics if f"untrained/{k}" in metrics]
    width = max((len(k) for k in keys), default=0)
    return [f"{'':{width}}  trained  untrained"] + [
        f"{k:{width}}  {metrics[k]:7.4f}  {metrics[f'untrained/{k}']:9.4f}" for k in keys] if keys else []


def heldout_count(test_set, limit: int | None) -> int | None:
    """How many held-out samples an evaluation with trainer.eval_samples `limit` scores (None without a split)."""
    s = monitor.eval_sets(None, test_set, limit)[1]
    return None if s is None else len(s)
