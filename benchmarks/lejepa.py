"""LeJEPA's claims (Balestriero & LeCun 2025) at small scale, against VICReg and BYOL:

    python benchmarks/lejepa.py [--seeds 0] [--steps 300] [--eval-every 25] [--domains image,audio,video,text,\
tabular,rl] [--out runs/lejepa] [--jobs 1]

(a) Stability: on the digits, each of lejepa, vicreg and byol at three learning rates spanning 10x (optim.base_lr x
    1/sqrt(10), 1, sqrt(10)) with two encoders (the default transformer and encoder=resnet18, a CNN): 6 cells each.
(b) One recipe everywhere: lejepa at its defaults in every domain, against the same seed's untrained encoder.
(c) The training signal predicts the downstream one: along the default digits run (transformer, base lr), SIGReg at
    each evaluation (the mean of the training rows logged since the previous one) against the held-out kNN accuracy.

The criteria, fixed before any run:
  A  lejepa's spread (max - min held-out kNN over its 6 cells, mean over seeds) is smaller than vicreg's and byol's.
  B  lejepa's held-out metric is at least 0.05 above the untrained encoder's kNN on image, audio, video and text, and
     above the untrained encoder's on tables (linear probe) and buffers (state R²).
  C  Spearman's rank correlation between SIGReg and kNN over the evaluations is at most -0.6 (SIGReg falls as kNN
     rises); the total loss's correlation is reported beside it.
"""
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from paired import final, heldout, mean_sd, parser, run_all, train
from results import command_line, write

OBJECTIVES = ("lejepa", "vicreg", "byol")
ENCODERS = {"transformer": (), "resnet18": ("encoder=resnet18",)}
SCALES = {"lr_div_sqrt10": 10 ** -0.5, "lr": 1.0, "lr_x_sqrt10": 10 ** 0.5}  # names are folder names too
NOTE = ("Digits unless said; seed(s) {seeds}, {steps} steps on 2 CPU cores; held-out kNN accuracy (tables: linear "
        "probe; buffers: state R²) and the same seed's untrained encoder. Criteria A-C of benchmarks/lejepa.py, fixed "
        "before any run.")


def ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    for r, i in enumerate(order):
        out[i] = float(r)
    return out


def spearman(xs: list[float], ys: list[float]) -> float:
    a, b = ranks(xs), ranks(ys)
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    return sum((x - ma) * (y - mb) for x, y in zip(a, b)) / ((len(a) - 1) * sa * sb) if sa and sb else math.nan


def stability(args, seeds: list[int]) -> list[str]:
    """Claim A: the grid, one row per objective x encoder, and the spreads."""
    from multissl.cli import load_config
    base = load_config([]).optim.base_lr
    root = Path(args.out or "runs/lejepa") / "image"
    threads = 0 if args.jobs == 1 else max(1, (os.cpu_count() or 1) // args.jobs)  # 0: in this process
    jobs = {(o, e, name, s): (root / f"{o}-{e}-{name}-s{s}", "image",
                              (f"objective={o}", *enc, f"optim.base_lr={base * f:.3g}"), s, args.steps)
            for o in OBJECTIVES for e, enc in ENCODERS.items() for name, f in SCALES.items() for s in seeds}
    jobs |= {("untrained", e, s): (root / f"untrained-{e}-s{s}", "image", ("objective=simclr", *enc), s, 0)
             for e, enc in ENCODERS.items() for s in seeds}
    with ThreadPoolExecutor(args.jobs) as pool:  # the slowest (resnet18) first, so the pool ends together
        order = sorted(jobs, key=lambda k: k[1] != "resnet18")
        futures = {k: pool.submit(train, *jobs[k], args.eval_every, args.extra, threads) for k in order}
    cells = {k: final(f.result(), "knn_acc") for k, f in futures.items()}
    untrained = {e: mean_sd([cells[("untrained", e, s)] for s in seeds])[0] for e in ENCODERS}
    lines = ["| objective | encoder | " + " | ".join(SCALES) + " | untrained |", "| --- " * (3 + len(SCALES)) + "|"]
    for o in OBJECTIVES:
        for e in ENCODERS:
            vals = [mean_sd([cells[(o, e, n, s)] for s in seeds])[0] for n in SCALES]
            lines.append(f"| {o} | {e} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {untrained[e]:.3f} |")
    spread = {o: mean_sd([max(v) - min(v) for v in ([cells[(o, e, n, s)] for e in ENCODERS for n in SCALES]
                                                     for s in seeds)])[0] for o in OBJECTIVES}
    others = [o for o in OBJECTIVES if o != "lejepa"]
    holds = all(spread["lejepa"] < spread[o] for o in others)
    lines += ["", f"A {'holds' if holds else 'does not hold'}: spread (max - min kNN over the 6 cells) "
              + ", ".join(f"{o} {spread[o]:.3f}" for o in OBJECTIVES) + f" (base lr {base:g})"]
    return lines


def everywhere(args, seeds: list[int]) -> list[str]:
    """Claim B: lejepa's defaults in every domain (runs shared with benchmarks/cookbook.py's folder layout)."""
    import copy
    every = copy.copy(args)
    every.eval_every = 100  # only the end matters here
    results = run_all(every, {"lejepa": ("objective=lejepa",)}, "runs/lejepa")
    lines, ok = ["| domain | metric | lejepa | untrained | gain |", "| --- " * 5 + "|"], True
    for d in args.domains.split(","):
        held = heldout(d)
        t, u = (mean_sd([final(results[(d, a, s)], held) for s in seeds])[0] for a in ("lejepa", "untrained"))
        bar = 0.0 if d in ("tabular", "rl") else 0.05  # the defaults: a classification table, a probe's R²
        gain = t - u
        ok &= gain > bar if bar == 0 else gain >= bar
        lines.append(f"| {d} | {held} | {t:.3f} | {u:.3f} | {gain:+.3f} |")
    return lines + ["", f"B {'holds' if ok else 'does not hold'} (bar: +0.05 kNN; above the untrained encoder on "
                        f"tables and buffers)"]


def tracking(args, seed: int) -> list[str]:
    """Claim C on the default digits run of the grid."""
    from paired import read
    rows = read(Path(args.out or "runs/lejepa") / "image" / f"lejepa-transformer-lr-s{seed}")
    lines, xs, ys, ls = ["| step | lejepa/sigreg | loss | knn_acc |", "| --- " * 4 + "|"], [], [], []
    last = 0
    for r in rows:
        if "loss" in r or "knn_acc" not in r or r["step"] == 0:
            continue
        window = [x for x in rows if "loss" in x and last < x["step"] <= r["step"]]
        last = r["step"]
        if not window:
            continue
        sig = sum(x["lejepa/sigreg"] for x in window) / len(window)
        loss = sum(x["loss"] for x in window) / len(window)
        xs, ys, ls = xs + [sig], ys + [r["knn_acc"]], ls + [loss]
        lines.append(f"| {r['step']} | {sig:.4f} | {loss:.4f} | {r['knn_acc']:.3f} |")
    rho, rho_loss = spearman(xs, ys), spearman(ls, ys)
    return lines + ["", f"C {'holds' if rho <= -0.6 else 'does not hold'}: Spearman(SIGReg, kNN) = {rho:.3f} over "
                        f"{len(xs)} evaluations; Spearman(loss, kNN) = {rho_loss:.3f}"]


def main(argv=None) -> list[str]:
    p = parser(__doc__, "image,audio,video,text,tabular,rl")
    p.set_defaults(eval_every=25, seeds="0")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = ["## (a) Stability over learning rates and encoders (digits)", "", *stability(args, seeds), "",
             "## (b) One recipe in every domain", "", *everywhere(args, seeds), "",
             f"## (c) SIGReg along training (digits, seed {seeds[0]})", "", *tracking(args, seeds[0])]
    print("\n".join(lines))
    write(Path(args.results) / "lejepa-claims.md", "\n".join(lines), command_line(__file__, argv),
          note=NOTE.format(seeds=args.seeds, steps=args.steps))
    return lines


if __name__ == "__main__":
    main()
