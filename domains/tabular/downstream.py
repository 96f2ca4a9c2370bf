"""Held-out evaluation of a table's embeddings beside its raw features: a linear probe on the embeddings, and
gradient-boosted trees on the encoded features alone and on features + embeddings (probes.downstream_scores)."""
import numpy as np

from ..features import FIRST_CATEGORY
from ..probes import downstream_scores
from .table import Rows

HGB_MAX_CATEGORIES = 255  # HistGradientBoosting's native categorical limit (ids < max_bins)


def downstream_metrics(train: Rows, test: Rows, embed, vocab_sizes: list[int], classes: list | None,
                       limit: int | None) -> dict:
    """`probe_linear` (logistic regression accuracy / ridge RMSE on standardized embeddings), `gbdt_raw` and
    `gbdt_raw_ssl` on the test rows, fit on the train rows (`limit` rows of each, evenly spread; None = all) whose
    target is known. `embed(rows) -> [n d]`; classes: the target's classes (empty or None: a numeric target).
    Empty when either split has no usable label."""
    tr, te = (part.take(limit) for part in (train, test))
    (y_tr, on_tr), (y_te, on_te) = labels(tr, classes), labels(te, classes)
    if not on_tr.any() or not on_te.any():
        return {}
    cat = np.array([0 < v <= HGB_MAX_CATEGORIES - FIRST_CATEGORY for v in vocab_sizes])
    return downstream_scores(tr.x.numpy()[on_tr], embed(tr).numpy()[on_tr], y_tr[on_tr],
                             te.x.numpy()[on_te], embed(te).numpy()[on_te], y_te[on_te], cat, bool(classes))


def labels(rows: Rows, classes: list | None) -> tuple[np.ndarray, np.ndarray]:
    """(labels [n], usable bool [n]) of a split: class ids >= 0, or finite numeric targets."""
    if classes:
        y = rows.y.numpy()
        return y, y >= 0
    return rows.target, np.isfinite(rows.target)
