"""`python -m multissl.report <run or sweep> [<run or sweep> …] [--out <folder>]` — PNG plots of runs'
`metrics.jsonl`, several runs overlaid, and one self-contained HTML page (the PNGs inline) that shows them: the loss
and the objective's terms, the held-out metrics, RankMe / effective ranks / rank difference, the duality criteria
over steps, and the singular-value spectrum of the final representation and projector output. A sweep folder (`-m`:
a folder whose subfolders are runs) stands for all its runs. Writes to <first run or sweep>/report unless --out is
given."""
import base64
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a training machine
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from multissl.contracts import Objective, optional  # noqa: E402
from multissl.cli import take_option  # noqa: E402
from multissl.errors import UserError  # noqa: E402

RANKS = ("rankme", "rankme_proj", "erank", "erank_proj", "rdm/erank_online", "rdm/erank_target", "rdm/diff")
NOT_HELDOUT = ("emb_std", "emb_std_proj", "collapse_warning", "step")


def read_rows(run: Path) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run} has no metrics.jsonl; pass a run folder (runs/<name>) or a sweep folder (its runs)")
    from multissl.runlog import read_rows
    return read_rows(path)


def is_run(folder: Path) -> bool:
    return (folder / "metrics.jsonl").is_file()


def expand(paths: list) -> list[Path]:
    """The runs the arguments name: a run folder is itself; a folder whose subfolders are runs (a sweep) is those
    runs, in name order. Anything else is kept, for read_rows to name."""
    runs = []
    for p in map(Path, paths):
        inside = sorted(f for f in p.iterdir() if f.is_dir() and is_run(f)) if p.is_dir() and not is_run(p) else []
        runs += inside or [p]
    return runs


def labels(runs: list[Path]) -> list[str]:
    """A run's name in the plots: its folder's name, or parent/name where two runs (of two sweeps) share one."""
    names = [r.name for r in runs]
    return [n if names.count(n) == 1 else f"{r.parent.name}/{n}" for n, r in zip(names, runs)]


def groups(rows: list[dict]) -> dict[str, list[str]]:
    """Plot name -> the metric keys it shows, from the keys the rows hold."""
    train = [k for r in rows if "loss" in r for k in r]
    evals = [k for r in rows if "loss" not in r for k in r]
    keys = lambda ks, keep: [k for k in dict.fromkeys(ks) if keep(k)]  # noqa: E731
    return {"loss": keys(train, lambda k: k == "loss" or ("/" in k and not k.startswith(("duality/", "rdm/")))),
            "heldout": keys(evals, lambda k: k not in RANKS and k not in NOT_HELDOUT and "/" not in k),
            "ranks": keys(evals, lambda k: k in RANKS),
            "duality": keys(evals, lambda k: k.startswith("duality/"))}


def plot_metrics(runs: dict[str, list[dict]], keys: list[str], title: str):
    """One panel per key, a line per run over the steps that logged it; None when no run logged any key."""
    if not keys:
        return None
    cols = min(3, len(keys))
    n_rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.2 * cols, 3 * n_rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for i, (name, rows) in enumerate(runs.items()):  # a run keeps its colour in every panel
            pts = [(r["step"], r[key]) for r in rows if key in r and isinstance(r[key], (int, float))]
            if pts:
                ax.plot(*zip(*pts), color=f"C{i}", marker="o" if len(pts) < 20 else None, markersize=3, label=name)
        ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.remove()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@torch.no_grad()
def spectra(run: Path) -> dict[str, torch.Tensor]:
    """Singular values of the run's final training-set representation (and projector output, from its last
    checkpoint), each divided by its largest."""
    from multissl import monitor, spectral
    from multissl.data import eval_loader
    from multissl.evaluate import run_config, run_objective
    from multissl.export import load_encoder
    cfg = run_config(run)
    enc = load_encoder(run)
    enc.domain.data = cfg.get("data") or {}
    train = monitor.eval_sets(enc.domain.dataset("train"), None, (cfg.get("trainer") or {}).get("eval_samples"))[0]
    rep = monitor.embed_all(enc.encoder, eval_loader(train, enc.domain), "cpu", enc.domain)[0]
    out = {"representation": spectral.singular_values(rep)}
    objective = run_objective(run, cfg, enc.domain, enc.encoder)
    proj = optional(objective, Objective, "projector")
    if proj is not None:
        out["projector output"] = spectral.singular_values(proj(rep))
    return {k: v / v[0].clamp_min(1e-30) for k, v in out.items()}


def plot_spectra(runs: list[Path]):
    found = {name: spectra(run) for name, run in zip(labels(runs), runs)}
    kinds = list(dict.fromkeys(k for s in found.values() for k in s))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.8 * len(kinds), 3.4), squeeze=False)
    for ax, kind in zip(axes.flat, kinds):
        for i, (name, s) in enumerate(found.items()):
            if kind in s:
                ax.semilogy(range(1, len(s[kind]) + 1), s[kind].clamp_min(1e-12).numpy(), color=f"C{i}", label=name)
        ax.set_xlabel("singular value index")
        ax.set_ylabel(f"sigma / sigma_max ({kind})")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("singular-value spectrum at the end")
    fig.tight_layout()
    return fig


def report(runs: list, out: Path | None = None) -> Path:
    """Writes <out>/<plot>.png and <out>/index.html (default: <first run or sweep>/report); returns out."""
    first = Path(runs[0])
    runs = expand(runs)
    rows = {name: read_rows(r) for name, r in zip(labels(runs), runs)}
    out = Path(out) if out is not None else first / "report"
    out.mkdir(parents=True, exist_ok=True)
    per_run = [groups(rs) for rs in rows.values()]
    figures = {g: plot_metrics(rows, list(dict.fromkeys(k for keys in per_run for k in keys[g])), g)
               for g in ("loss", "heldout", "ranks", "duality")}
    if all((r / "encoder").is_dir() for r in runs):
        figures["spectrum"] = plot_spectra(runs)
    html = [f"<html><head><meta charset='utf-8'><title>multissl report</title></head><body>"
            f"<h1>multissl report</h1><p>{', '.join(rows)}</p>"]
    for name, fig in figures.items():
        if fig is None:
            continue
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        html.append(f"<h2>{name}</h2><img src='data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}'>")
    (out / "index.html").write_text("\n".join(html + ["</body></html>"]))
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if argv else 2)
    out, argv = take_option(argv, "--out")
    try:
        print(report(argv, out))
    except UserError as e:
        print(f"multissl: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
