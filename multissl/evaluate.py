"""`python -m multissl.evaluate <run dir> [data.path=…]` — kNN accuracy, linear-probe accuracy and RankMe
of a finished run's exported encoder on the held-out split, its spectral diagnostics (with the projector and the
two branches of the objective when the run folder holds a checkpoint), plus the domain's own metrics where it has
them (tabular: linear probe vs. gradient-boosted trees). Prints one JSON object."""
import json
import sys
from pathlib import Path

import torch

from multissl import checkpoint, monitor, registry
from multissl.errors import UserError
from multissl.export import load_encoder


def linear_probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    """Logistic regression on standardized frozen features (the usual linear evaluation)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return float(clf.fit(train_x.numpy(), train_y.numpy()).score(test_x.numpy(), test_y.numpy()))


def run_objective(path: Path, cfg: dict, domain, encoder):
    """The run's objective (heads, teachers, centres) as its last checkpoint holds it, in eval mode; None for a folder
    without config.yaml or a checkpoint (an exported encoder alone). config.yaml is data: it may name only classes
    multissl knows (multissl.registry); `cfg` is it as `run_config` read it."""
    ckpt = checkpoint.latest(path / "checkpoints")
    if not isinstance(cfg.get("objective"), dict) or ckpt is None:
        return None
    objective = registry.build(cfg["objective"], path / "config.yaml", encoder=encoder, domain=domain)
    state = checkpoint.load(ckpt)["model"]
    objective.load_state_dict({k[len("objective."):]: v for k, v in state.items() if k.startswith("objective.")})
    return objective.eval()


def run_config(path: Path) -> dict:
    """A run folder's config.yaml as plain data, every class it names checked (multissl.registry); {} without one."""
    source = Path(path) / "config.yaml"
    if not source.exists():
        return {}
    cfg = registry.read_yaml(source)
    registry.check(cfg, source)
    return cfg


def evaluate_run(path, data: dict | None = None, k: int = 20, temperature: float = 0.07) -> dict:
    path = Path(path)
    cfg = run_config(path)
    if data is None and isinstance(cfg.get("data"), dict):
        data = cfg["data"]
    enc = load_encoder(path)
    enc.domain.data = data or {}
    limit = (cfg.get("trainer") or {}).get("eval_samples")  # the samples the run evaluated on
    train_set, test_set = monitor.eval_sets(enc.domain.dataset("train"), enc.domain.dataset("test"), limit)
    out, tr_x, labelled = monitor.heldout_metrics(enc.encoder, enc.domain, train_set, test_set, "cpu", k, temperature)
    out |= monitor.spectral_metrics(enc.encoder, run_objective(path, cfg, enc.domain, enc.encoder), enc.domain,
                                    train_set, tr_x, "cpu")
    if labelled is not None:
        out["linear_acc"] = linear_probe_accuracy(*labelled)
    return out | monitor.domain_metrics(enc.encoder, enc.domain, "cpu", monitor.downstream_cap(limit))


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
