"""`python -m multissl.evaluate <run dir> [data.path=…]` — kNN accuracy, linear-probe accuracy and RankMe
of a finished run's exported encoder on the held-out split, plus the domain's own metrics where it has
them (tabular: linear probe vs. gradient-boosted trees). Prints one JSON object."""
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from multissl import monitor
from multissl.errors import UserError
from multissl.export import load_encoder


def linear_probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    """Logistic regression on standardized frozen features (the usual linear evaluation)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return float(clf.fit(train_x.numpy(), train_y.numpy()).score(test_x.numpy(), test_y.numpy()))


def evaluate_run(path, data: dict | None = None, k: int = 20, temperature: float = 0.07) -> dict:
    path = Path(path)
    run_cfg = path / "config.yaml"
    if data is None and run_cfg.exists():
        data = OmegaConf.to_container(OmegaConf.load(run_cfg).data)
    enc = load_encoder(path)
    enc.domain.data = data or {}
    out, _, labelled = monitor.heldout_metrics(enc.encoder, enc.domain, enc.domain.dataset("train"),
                                               enc.domain.dataset("test"), "cpu", k, temperature)
    if labelled is not None:
        out["linear_acc"] = linear_probe_accuracy(*labelled)
    return out | monitor.domain_metrics(enc.encoder, enc.domain, "cpu")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if argv else 2)
    data = None
    for a in argv[1:]:
        key, _, value = a.partition("=")
        if key != "data.path":
            print(f"multissl: error: unknown argument {a!r}; only data.path=<path> is accepted", file=sys.stderr)
            sys.exit(2)
        data = {"path": value}
    try:
        with torch.no_grad():
            print(json.dumps(evaluate_run(argv[0], data)))
    except UserError as e:
        print(f"multissl: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
