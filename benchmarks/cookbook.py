"""The Cookbook's systems and LeJEPA, each at its default recipe, against the same seed's untrained encoder:

    python benchmarks/cookbook.py [--domains image,audio,tabular,rl] [--seeds 0] [--steps 300] [--arms a,b] \
        [--out runs/cookbook] [--jobs 1] [key=value ...]

Arms: scl, wmse, meanshift, lejepa, simmim, msn, cpc, ibot, dinov2 (an arm name that is not an objective of this
install is skipped). Prints, per domain, each arm's held-out metric (kNN accuracy; tables: the linear probe's
accuracy or RMSE; buffers: the state probe's R²), its gain over the untrained encoder, and RankMe at the end. The bar,
fixed before any run: on the digits and on the spoken words (the image and audio defaults), kNN at least 0.05 above
the untrained encoder's; on tables and buffers the domain's own metric is reported next to the untrained encoder's.
"""

from paired import final, heldout, parser, run_domains, untrained, write_domains

from multissl.cli import options, pairs

OBJECTIVES = ("scl", "wmse", "meanshift", "lejepa", "simmim", "msn", "cpc", "ibot", "dinov2")
BAR = {"image": 0.05, "audio": 0.05}
NOTE = ("Each objective at its default recipe (seed(s) {seeds}, {steps} steps on 2 CPU cores) and the same seed's "
        "untrained encoder (trainer.max_steps=0). The bar, fixed before any run: kNN at least 0.05 above the untrained "
        "encoder's on the digits and the spoken words; tables and buffers: the domain's own metric, reported.")


def verdicts(results: dict, domain: str, seeds: list[int]) -> list[str]:
    if domain not in BAR:
        return []
    held, out = heldout(domain), []
    for a in dict.fromkeys(a for d, a, _ in results if d == domain and a != "untrained"):
        gains = [final(results[(domain, a, s)], held) - untrained(results, domain, a, s, held) for s in seeds]
        gain = sum(gains) / len(gains)
        out.append(f"{a}: {held} {gain:+.3f} over the untrained encoder, "
                   f"{'clears' if gain >= BAR[domain] else 'does not clear'} the +{BAR[domain]:.2f} bar")
    return out


def main(argv=None) -> dict:
    args = parser(__doc__, "image,audio,tabular,rl").parse_args(argv)
    known, fits = set(options("objective")), set(pairs())
    results = run_domains(args, lambda d: {o: (f"objective={o}",) for o in OBJECTIVES  # not cpc on tables
                                           if o in known and (d, o) in fits}, "runs/cookbook")
    write_domains(results, args, argv, __file__, "cookbook", verdicts, NOTE)
    return results


if __name__ == "__main__":
    main()
