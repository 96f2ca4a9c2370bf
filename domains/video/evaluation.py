"""The video domain's own held-out metrics, beside the engine's kNN on the class label: the same kNN on the other
labels of the data (moving digits: the direction), and the raw-pixel baselines an encoder should beat — kNN on the
whole evaluation clip and on its first frame, on a bounded subset."""
import torch
import torch.nn.functional as F

# The most clips per split (evenly spread) that the raw-pixel baselines score, whatever trainer.eval_samples allows:
# their features are kept whole (float, up to 32 x 32 per frame). Above the default data's training split.
PIXEL_CLIPS = 3000


def labels_of(ds) -> torch.Tensor:
    return torch.tensor([ds[i]["y"] for i in range(len(ds))])


def pick(values: list, ds) -> torch.Tensor:
    """The entries of a split-long label list that a (possibly subset) dataset holds."""
    return torch.tensor([values[i] for i in getattr(ds, "indices", range(len(ds)))])


def knn(a, ya, b, yb) -> float:
    """The engine's kNN accuracy of b's labels from a's, unlabelled samples (-1) left out."""
    from multissl.monitor import knn_accuracy
    if not (ya >= 0).any() or not (yb >= 0).any():
        return float("nan")
    return knn_accuracy(a[ya >= 0], ya[ya >= 0], b[yb >= 0], yb[yb >= 0])


def raw_pixels(ds, eval_raw, size: int, block: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw pixels of ds's evaluation clips (eval_raw(x) -> uint8 [t c s s]) [n t*c*r*r] and of their first frames
    [n c*r*r], r = min(size, 32); `block` clips at a time are made float, so only the small copies are kept."""
    r = min(size, 32)
    small = []
    for start in range(0, len(ds), block):
        clips = torch.stack([eval_raw(ds[i]["x"]) for i in range(start, min(start + block, len(ds)))])  # [b t c s s]
        x = F.interpolate(clips.flatten(0, 1).float() / 255, size=(r, r), mode="area")  # [(b t) c r r]
        small.append(x.view(*clips.shape[:3], r, r))
    small = torch.cat(small)  # [n t c r r]
    return small.flatten(1), small[:, 0].flatten(1)


def split_labels(tr, te, extra: dict) -> dict:
    """{label: (train ids, test ids)} of two (possibly subset) splits: the class (`acc`) and each extra label."""
    labels = {"acc": (labels_of(tr), labels_of(te))}
    return labels | {k: (pick(v["train"], tr), pick(v["test"], te)) for k, v in extra.items()}


def knn_metrics(train, test, extra: dict, embed, limit: int | None, pixels, cache: dict) -> dict:
    """embed(dataset) -> [n d]; extra: {label: {split: values}}; pixels(dataset) -> (`raw_pixels`) -> `knn_<label>`
    for each extra label, on `limit` samples per split, and `pixel_knn_<label>` / `frame_knn_<label>` for every label
    (the class: `acc`), on at most PIXEL_CLIPS of them. The pixel baselines do not change as the encoder trains: kept in
    `cache` per number of samples."""
    from multissl.monitor import subset
    out = {}
    if extra:
        tr, te = subset(train, limit), subset(test, limit)
        a, b = embed(tr), embed(te)
        out |= {f"knn_{k}": knn(a, ya, b, yb) for k, (ya, yb) in split_labels(tr, te, extra).items() if k != "acc"}
    n = PIXEL_CLIPS if limit is None else min(limit, PIXEL_CLIPS)
    if n not in cache:
        tr, te = subset(train, n), subset(test, n)
        (pa, fa), (pb, fb) = pixels(tr), pixels(te)
        cache[n] = {f"{kind}_knn_{k}": knn(u, ya, v, yb) for k, (ya, yb) in split_labels(tr, te, extra).items()
                    for kind, u, v in (("pixel", pa, pb), ("frame", fa, fb))}
    return out | cache[n]
