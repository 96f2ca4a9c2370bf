"""The baselines next to the trained encoder: at the end of a run the same held-out metrics of the encoder's initial
weights (the same seed's, so the comparison is paired), logged as `untrained/<metric>`, and of the raw input — what a
user would try before any encoder (the domain's `raw_features`: raw pixels, log-mel frames, TF-IDF, the encoded
columns, a random projection of frames) — logged as `raw/<metric>`; and one line each that says whether pretraining
helped on this data and whether the encoder beats the raw input. Scoring them costs a forward pass and a pass over
the evaluation samples."""
import copy
import math

import torch

from multissl import monitor
from multissl.contracts import Domain, Downstream, has, optional
from multissl.data import eval_input_on, eval_loader


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


@torch.no_grad()
def raw_embed(domain, device):
    """dataset -> ([n f] the raw-input baseline's features of its samples, [n] labels): the domain's
    `raw_features(x, pad)` of each evaluation batch, or the flattened model input (padding zeroed)."""
    own = optional(domain, Domain, "raw_features")

    def embed(ds) -> tuple[torch.Tensor, torch.Tensor]:
        feats, labels = [], []
        for x, pad, y in eval_loader(ds, domain):
            if own is not None:
                f = own(x, pad)
            else:
                f = eval_input_on(domain, x, device)  # [b ...]
                if pad is not None:  # [b n]: a padded token's values are not the sample's
                    f = f.masked_fill(pad.to(f.device).view(*pad.shape, *[1] * (f.dim() - 2)), 0)
                f = f.flatten(1)
            feats.append(f.float().cpu())
            labels.append(y)
        return torch.cat(feats), torch.cat(labels)
    return embed


RAW_BYTES = 512 << 20  # the raw features of one split are kept whole: at most this many bytes (float32)


def raw_metrics(domain, train_set, test_set, device, knn_k: int, knn_temperature: float, limit: int | None) -> dict:
    """kNN accuracy and the domain's own downstream metrics of the raw input's features, as `raw/<metric>`, on the
    samples the trained encoder's evaluation used — fewer, evenly spread, where their features would pass RAW_BYTES."""
    embed, out = raw_embed(domain, device), {}
    train_set, test_set = monitor.eval_sets(train_set, test_set, limit)  # the samples the trained encoder had
    if test_set is not None:
        width = embed(monitor.subset(train_set, 1))[0].shape[1]
        train_set, test_set = (monitor.subset(s, max(1, RAW_BYTES // (4 * width))) for s in (train_set, test_set))
        (tr_x, tr_y), (te_x, te_y) = embed(train_set), embed(test_set)
        a, b = tr_y >= 0, te_y >= 0
        if a.any() and b.any():
            out["knn_acc"] = monitor.knn_accuracy(tr_x[a], tr_y[a], te_x[b], te_y[b], knn_k, knn_temperature)
    if has(domain, Downstream):
        out |= domain.downstream_metrics(lambda ds: embed(ds)[0], limit=monitor.downstream_cap(limit))
    return {f"raw/{k}": v for k, v in out.items()}


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


def raw_verdict(metrics: dict, domain) -> str | None:
    """One line: the headline metric of the trained encoder against the raw input's."""
    key, higher, _ = optional(domain, Downstream, "headline")
    if key not in metrics or f"raw/{key}" not in metrics:
        return None
    new, raw = metrics[key], metrics[f"raw/{key}"]
    beats = new > raw if higher else new < raw
    return (f"{'the encoder beats' if beats else 'the encoder does not beat'} the raw input on this data: {key} "
            f"{new:.4f}, raw input {raw:.4f} ({new - raw:+.4f}, {'higher' if higher else 'lower'} is better)")


def table(metrics: dict) -> list[str]:
    """The metrics that have an untrained or a raw-input counterpart, side by side: `metric  trained  untrained
    raw`."""
    keys = [k for k in metrics if f"untrained/{k}" in metrics or f"raw/{k}" in metrics]
    width = max((len(k) for k in keys), default=0)
    cell = lambda k, w: f"{metrics[k]:{w}.4f}" if k in metrics else f"{'-':>{w}}"  # noqa: E731
    return [f"{'':{width}}  trained  untrained      raw"] + [
        f"{k:{width}}  {metrics[k]:7.4f}  {cell(f'untrained/{k}', 9)}  {cell(f'raw/{k}', 7)}" for k in keys] if keys else []


def heldout_count(test_set, limit: int | None) -> int | None:
    """How many held-out samples an evaluation with trainer.eval_samples `limit` scores (None without a split)."""
    s = monitor.eval_sets(None, test_set, limit)[1]
    return None if s is None else len(s)
