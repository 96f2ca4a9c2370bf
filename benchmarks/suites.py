"""Does the default recipe beat its own untrained encoder and the obvious baseline on data it was never tuned on? The
per-domain suites of labelled sets (benchmarks/sets/<domain>.py: text, image, video, audio; tables and buffers have
their own, tables.py and buffers.py):

    python benchmarks/suites.py --domain text [--sets a,b] [--seeds 0,1,2] [--arms default] [--steps 500] \
        [--jobs 2] [--out runs/suites] [--earlier results/suite-text.json] [key=value ...]

Each set is generated once under the multissl cache with a fixed held-out split, and each run points the domain at it
and changes nothing else: the arm `default` is `python -m multissl.train domain=<domain> data.path=<set>` as a user
would run it, `default+key=value...` the same with settings changed (what decides a recipe); other arms are objective
names, optionally with `+key=value` settings (paired.arm_overrides). One run
gives the three scores compared, all on the held-out split at the end: the trained encoder's `<metric>`, the same
seed's untrained encoder's (`untrained/<metric>`: the initial weights of the encoder it trained) and the obvious
baseline's (`raw/<metric>`: raw pixels or clip, raw log-mel frames, TF-IDF). Every run's three scores are also written
as JSON beside the results file; `--earlier` takes such files, and the (set, arm, seed) runs they hold are read from
them instead of trained again (a suite completed over several sessions; the results file says which came from where).

Decided before any run, for each arm (gains are trained minus untrained, same seed and run):

  S1  Over the suite the mean paired gain is positive with a paired t above 2 (mean / standard error over every
      (set, seed) pair), and positive on every set (mean over its seeds).
  S2  The trained encoder beats the obvious baseline (mean over seeds) on at least half of the sets.
"""
import importlib
import math
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from paired import arm_list, arm_overrides, final, mean_sd, seed_list, train
from records import read_records, write_records
from results import add_argument, command_line, write

from multissl.domains.cache import default_cache_dir

DOMAINS = ("text", "image", "video", "audio")


def sets_of(domain: str) -> dict:
    return importlib.import_module(f"sets.{domain}").SETS


def data_root(domain: str, name: str, scale: float) -> Path:
    """Where a set is written: one folder per (set, scale), so a test's tiny set never stands in for the real one."""
    return default_cache_dir() / "bench" / "sets" / domain / f"{name}-{scale:g}"


def overrides_of(arm: str) -> tuple:
    """`default` is the domain's recipe, `default+key=value...` that recipe with settings changed (the runs that
    decide a recipe), else an objective with its settings (paired.arm_overrides)."""
    name, *settings = arm.split("+")
    return tuple(settings) if name == "default" else arm_overrides(arm)


def run_suite(args) -> tuple[dict, list[str]]:
    """({(set, arm, seed): {"trained", "untrained", "raw": held-out scores}}, where earlier runs came from); sets that
    read another set's runs (`same_run_as`) read them rather than train again, and runs the --earlier files hold are
    read from them."""
    sets, domain = sets_of(args.domain), args.domain
    names = args.sets.split(",") if args.sets else list(sets)
    unknown = [n for n in names if n not in sets]
    if unknown:
        sys.exit(f"unknown set(s) {', '.join(unknown)} of domain {domain}; its sets: {', '.join(sets)}")
    seeds, arms = seed_list(args.seeds), arm_list(args.arms)
    earlier, _, said = read_records(args.earlier, domain, args.steps, seeds)
    root = Path(args.out or "runs/suites") / domain
    runs_of = lambda n: sets[n].same_run_as or n  # noqa: E731
    needed = {(runs_of(n), a, s) for n in names for a in arms for s in seeds if (n, a, s) not in earlier}
    data = {m: sets[m].prepare(data_root(domain, m, args.scale), args.scale) for m in {m for m, _, _ in needed}}
    threads = 0 if args.jobs == 1 else max(1, (os.cpu_count() or 1) // args.jobs)
    jobs = {(m, a, s): (root / m / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', a)}-s{s}", domain,
                        (*overrides_of(a), *data[m]), s, args.steps, 0, args.extra, threads)
            for m, a, s in sorted(needed, key=lambda k: (k[2], k[0], k[1]))}  # a seed of every set, then the next
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = {k: f.result() for k, f in {k: pool.submit(train, *v) for k, v in jobs.items()}.items()}
    out = {}
    for n in names:
        metric = sets[n].metric
        for a in arms:
            for s in seeds:
                out[(n, a, s)] = earlier.get((n, a, s)) or {
                    k: final(rows[(runs_of(n), a, s)], f"{p}{metric}")
                    for k, p in (("trained", ""), ("untrained", "untrained/"), ("raw", "raw/"))}
    return out, said


def verdicts(results: dict, names: list[str], arm: str, seeds: list[int]) -> list[str]:
    """S1 and S2 for one arm."""
    gains = {n: [results[(n, arm, s)]["trained"] - results[(n, arm, s)]["untrained"] for s in seeds] for n in names}
    every = [g for n in names for g in gains[n]]
    m, sd = mean_sd(every)
    t = m / (sd / math.sqrt(len(every))) if sd > 0 else math.copysign(math.inf, m)
    losing = [f"{n} {mean_sd(gains[n])[0]:+.3f}" for n in names if mean_sd(gains[n])[0] <= 0]
    s1 = m > 0 and t > 2 and not losing
    above = [n for n in names if mean_sd([results[(n, arm, s)]["trained"] - results[(n, arm, s)]["raw"]
                                          for s in seeds])[0] > 0]
    s2 = 2 * len(above) >= len(names)
    return [f"{arm}: S1 mean gain over untrained {m:+.4f} (sd {sd:.4f}, t {t:.2f}, {sum(g > 0 for g in every)}/"
            f"{len(every)} wins{'; not above it on ' + ', '.join(losing) if losing else ''}): "
            f"{'holds' if s1 else 'does not hold'}",
            f"{arm}: S2 above the obvious baseline on {len(above)}/{len(names)} sets"
            f"{' (' + ', '.join(above) + ')' if above else ''}: {'holds' if s2 else 'does not hold'}"]


def report(results: dict, domain: str, names: list[str], arms: list[str], seeds: list[int],
           said: list[str] = ()) -> list[str]:
    sets = sets_of(domain)
    lines = ["| set | arm | metric | untrained | trained | gain (wins) | obvious baseline | trained − baseline |",
             "| --- " * 8 + "|"]
    for n in names:
        for a in arms:
            col = {k: [results[(n, a, s)][k] for s in seeds] for k in ("trained", "untrained", "raw")}
            gains = [t - u for t, u in zip(col["trained"], col["untrained"])]
            (t, tsd), (u, _), (r, _) = (mean_sd(col[k]) for k in ("trained", "untrained", "raw"))
            lines.append(f"| {n} | {a} | {sets[n].metric} | {u:.3f} | {t:.3f} ± {tsd:.3f} | {mean_sd(gains)[0]:+.3f} "
                         f"({sum(g > 0 for g in gains)}/{len(seeds)}) | {r:.3f} | {t - r:+.3f} |")
    lines += ["", "Means over seeds (± sd of the trained encoder); the gain is paired seed by seed.", ""]
    lines += [f"Earlier runs: {line}." for line in said] + ([""] if said else [])
    for a in arms:
        lines += verdicts(results, names, a, seeds)
    lines += ["", "The sets:", ""] + [f"- **{n}**: {sets[n].about}" for n in names]
    return lines


def main(argv=None) -> dict:
    import argparse
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domain", required=True, choices=DOMAINS)
    p.add_argument("--sets", default=None, help="comma-separated subset of the domain's sets (default: every set)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default="default", help="default (the domain's recipe) and/or objective names, each "
                                                     "optionally with +key=value settings")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (1: in this one)")
    p.add_argument("--scale", type=float, default=1.0, help="sets' sample counts scaled (tests build tiny ones)")
    p.add_argument("--out", default=None)
    p.add_argument("--earlier", default=None,
                   help="comma-separated JSON files of earlier runs of this suite (beside each results file): the runs "
                        "they hold are not trained again")
    add_argument(p)
    p.add_argument("extra", nargs="*", help="key=value overrides for every run (e.g. a tiny encoder in tests)")
    args = p.parse_args(argv)
    results, said = run_suite(args)
    names = args.sets.split(",") if args.sets else list(sets_of(args.domain))
    arms, seeds = arm_list(args.arms), seed_list(args.seeds)
    lines = report(results, args.domain, names, arms, seeds, said)
    print("\n".join(lines))
    every = not args.sets or sorted(names) == sorted(sets_of(args.domain))
    target = Path(args.results) / f"suite-{args.domain}{'' if every else '-' + '-'.join(names)}.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_records(target.with_suffix(".json"), args.domain, args.steps, results, command_line(__file__, argv),
                  note="; ".join(said))
    write(target, "\n".join(lines), command_line(__file__, argv),
          note=f"Each set's fixed held-out split; {args.steps} steps, seeds {args.seeds}, on the machine below; each "
               f"run's trained encoder against its own untrained encoder (same seed) and the domain's obvious "
               f"baseline. Criteria S1, S2 fixed in this benchmark's docstring before any run.")
    return results


if __name__ == "__main__":
    main()
