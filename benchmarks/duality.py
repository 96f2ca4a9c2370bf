"""The contrastive / non-contrastive duality (Garrido et al. 2023) at small scale, paired over seeds:

    python benchmarks/duality.py [--domains image,audio,tabular] [--seeds 0,1,2] [--steps 300] [--arms a,b] \
        [--out runs/duality] [--jobs 1] [key=value ...]

Arms: vicreg, vicreg_exp, vicreg_ctr, simclr, simclr_tuned; and an embedding-dimension sweep of vicreg and simclr
with a fixed 1024-wide hidden layer (vicreg-d<D>, simclr-d<D>). Prints, per domain, the held-out metric and its gain
over the same seed's untrained encoder, RankMe and the diagnostics at the end, then L_c and L_nc along training of
simclr and vicreg (seed 0), and whether each claim holds. The claims and what counts as reproducing them were fixed
before any run:

  C1  VICReg-exp and VICReg-ctr reach VICReg's held-out metric within 0.02 (mean over seeds; the paper: within
      about a point on ImageNet).
  C2  Tuning closes SimCLR's gap to VICReg: |simclr_tuned - vicreg| < |simclr - vicreg|.
  C3  With the wide hidden layer, VICReg at the narrowest dimension is within 0.03 of its widest.
  C4  L_c and L_nc move together along training (the bounds of Corollary 3.4.1 tie them): their Pearson correlation
      over the evaluations is above 0.9 for simclr and for vicreg (seed 0).
"""
import math
from pathlib import Path

from paired import along, figures, final, heldout, mean_sd, parser, run_all, table
from results import command_line, write

NOTE = ("Each arm's held-out metric and its gain over the same seed's untrained encoder (mean ± sd over seeds, "
        "wins), the diagnostics at the end, and the claims C1-C4 of this benchmark's docstring, fixed before any run.")

DIMS = (16, 64, 256, 1024)
ARMS = {o: (f"objective={o}",) for o in ("vicreg", "vicreg_exp", "vicreg_ctr", "simclr", "simclr_tuned")}
ARMS |= {f"{o}-d{d}": (f"objective={o}", f"objective.projector=[1024,{d}]") for o in ("vicreg", "simclr") for d in DIMS}
KEYS = ["probe_test_acc", "rankme", "erank_proj", "duality/l_c", "duality/l_nc"]


def pearson(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 3:
        return math.nan
    (mx, sx), (my, sy) = mean_sd(xs), mean_sd(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / ((len(xs) - 1) * sx * sy) if sx and sy else math.nan


def claims(results: dict, domain: str, seeds: list[int]) -> list[str]:
    held = heldout(domain)
    have = {a for d, a, _ in results if d == domain}
    m = {a: mean_sd([final(results[(domain, a, s)], held) for s in seeds])[0] for a in have}
    out = []
    if {"vicreg", "vicreg_exp", "vicreg_ctr"} <= have:
        gaps = [m[a] - m["vicreg"] for a in ("vicreg_exp", "vicreg_ctr")]
        out.append(f"C1 {'holds' if all(abs(g) <= 0.02 for g in gaps) else 'does not hold'}: exp {gaps[0]:+.3f}, "
                   f"ctr {gaps[1]:+.3f} against vicreg")
    if {"vicreg", "simclr", "simclr_tuned"} <= have:
        a, b = abs(m["simclr_tuned"] - m["vicreg"]), abs(m["simclr"] - m["vicreg"])
        out.append(f"C2 {'holds' if a < b else 'does not hold'}: |tuned - vicreg| {a:.3f}, |simclr - vicreg| {b:.3f}")
    dims = [d for d in DIMS if f"vicreg-d{d}" in have]
    if len(dims) > 1:
        drop = m[f"vicreg-d{dims[-1]}"] - m[f"vicreg-d{dims[0]}"]
        out.append(f"C3 {'holds' if drop <= 0.03 else 'does not hold'}: vicreg d{dims[-1]} - d{dims[0]} = {drop:+.3f}")
    for a in ("simclr", "vicreg"):
        if a in have:
            rows = [r for r in results[(domain, a, seeds[0])] if "loss" not in r and "duality/l_c" in r]
            r = pearson([x["duality/l_c"] for x in rows], [x["duality/l_nc"] for x in rows])
            out.append(f"C4 ({a}) {'holds' if r > 0.9 else 'does not hold'}: corr(L_c, L_nc) = {r:.3f} over "
                       f"{len(rows)} evaluations")
    return out


def main(argv=None) -> dict:
    args = parser(__doc__, "image,audio,tabular").parse_args(argv)
    results = run_all(args, ARMS, "runs/duality")
    seeds = [int(s) for s in args.seeds.split(",")]
    for domain in args.domains.split(","):
        lines = [*table(results, domain, KEYS)]
        for a in ("simclr", "vicreg"):
            if (domain, a, seeds[0]) in results:
                lines += ["", f"{a}, seed {seeds[0]}, along training:", "",
                          *along(results, domain, a, seeds[0], ["duality/l_c", "duality/l_nc", "erank_proj"])]
        lines += ["", *claims(results, domain, seeds)]
        print(f"\n## {domain}\n\n" + "\n".join(lines))
        write(Path(args.results) / f"duality-{domain}.md", "\n".join(lines), command_line(__file__, argv),
              note=f"{NOTE} Domain: {domain}; seeds {args.seeds}; {args.steps} steps.")
        figures(results, args, "runs/duality", domain, {"objectives": ["simclr", "simclr_tuned", "vicreg", "vicreg_exp",
                                                                       "vicreg_ctr"],
                                                        "dimensions": [a for a in ARMS if "-d" in a]})
    return results


if __name__ == "__main__":
    main()
