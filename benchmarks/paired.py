"""Paired runs for the science benchmarks (duality.py, rdm.py): arms (name -> `multissl.train` overrides) x domains x
seeds, each seed's arm paired with the same seed's untrained encoder. A run that has exported its encoder is read,
not trained again; an unfinished one resumes. Prints markdown tables and writes the figures of each domain's first
seed with `multissl.report` (<out>/<domain>/report-<group>/).
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import results
from results import command_line, write

HELDOUT = {"tabular": "probe_linear", "rl": "state_r2_mean"}  # else knn_acc


UNTRAINED_BLANK = {"probe_test_acc"}  # the online probe of a run that took no step never trained: no figure


def heldout(domain: str) -> str:
    """The metric the benchmarks compare arms on."""
    return HELDOUT.get(domain, "knn_acc")


def parser(doc: str, domains: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domains", default=domains)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=100, help="evaluations along training (the criteria over steps)")
    p.add_argument("--arms", default=None, help="comma-separated subset of the arms")
    p.add_argument("--out", default=None)
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process (1: in this one)")
    results.add_argument(p)
    p.add_argument("extra", nargs="*", help="key=value overrides for every run (e.g. a tiny encoder)")
    return p


def train(folder: Path, domain: str, overrides: tuple, seed: int, steps: int, eval_every: int, extra: list,
          threads: int) -> list[dict]:
    """The metrics rows of one run, training it first unless it has logged its final evaluation (a run stopped
    between its export and that evaluation resumes at its last step and evaluates)."""
    from multissl.runlog import evaluated
    if not evaluated(folder, steps):
        args = [f"domain={domain}", *overrides, f"trainer.seed={seed}", f"trainer.max_steps={steps}",
                f"trainer.eval_every={eval_every}", *extra, f"run.dir={folder}"]
        if threads == 0:  # in this process (one run at a time)
            from multissl.cli import load_config
            from multissl.train import run
            run(load_config(args))
            return read(folder)
        cmd = [sys.executable, "-m", "multissl.train", *args]
        folder.parent.mkdir(parents=True, exist_ok=True)
        log = folder.parent / f"{folder.name}.log"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        with open(log, "w") as f:
            if subprocess.run(cmd, stdout=f, stderr=f, env=env).returncode:
                sys.exit(f"{folder.name} failed; its output is in {log}")
    return read(folder)


def read(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]


def out_root(args, out: str) -> Path:
    return Path(args.out or out)


def run_all(args, arms: dict[str, tuple], out: str) -> dict:
    """{(domain, arm, seed): rows}, arm "untrained" included."""
    chosen = {k: v for k, v in arms.items() if args.arms is None or k in args.arms.split(",")}
    arms = {"untrained": ("objective=simclr",), **chosen}
    seeds = seed_list(args.seeds)
    root = out_root(args, out)
    threads = 0 if args.jobs == 1 else max(1, (os.cpu_count() or 1) // args.jobs)  # 0: in this process
    jobs = {(d, a, s): (root / d / f"{a}-s{s}", d, arms[a], s, 0 if a == "untrained" else args.steps,
                        args.eval_every, args.extra, threads)
            for d in args.domains.split(",") for a in arms for s in seeds}
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {k: pool.submit(train, *v) for k, v in jobs.items()}
    return {k: f.result() for k, f in futures.items()}


def run_domains(args, arms_of, out: str) -> dict:
    """run_all for each of args.domains with the arms `arms_of(domain)` gives it (arms that differ by domain)."""
    results = {}
    for domain in args.domains.split(","):
        results |= run_all(argparse.Namespace(**{**vars(args), "domains": domain}), arms_of(domain), out)
    return results


def write_domains(results: dict, args, argv, script, name: str, verdicts, note: str) -> None:
    """Per domain of args.domains: `table` (with RankMe) and verdicts(results, domain, seeds), printed and written to
    <name>-<domain>.md (the benchmark `script`'s command line; `note` formatted with seeds and steps)."""
    seeds = seed_list(args.seeds)
    for domain in args.domains.split(","):
        lines = [*table(results, domain, ["rankme"]), "", *verdicts(results, domain, seeds)]
        print(f"\n## {domain}\n\n" + "\n".join(lines))
        write(Path(args.results) / f"{name}-{domain}.md", "\n".join(lines), command_line(script, argv),
              note=note.format(seeds=args.seeds, steps=args.steps) + f" Domain: {domain}.")


def final(rows: list[dict], key: str) -> float:
    """The key at the end-of-run evaluation (nan when it was not logged)."""
    found = [r[key] for r in rows if "loss" not in r and key in r]
    return found[-1] if found else math.nan


def mean_sd(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0


def untrained(results: dict, domain: str, arm: str, seed: int, key: str) -> float:
    """The untrained encoder's `key` that an arm's run is paired with: the run's own `untrained/<key>` (the same
    seed's initial weights of the encoder it trained: an objective may refuse the domain's choice of encoder, as
    token objectives refuse a conv encoder of frames), else the untrained arm's."""
    own = final(results[(domain, arm, seed)], f"untrained/{key}")
    return own if not math.isnan(own) else final(results[(domain, "untrained", seed)], key)


def table(results: dict, domain: str, keys: list[str]) -> list[str]:
    """One row per arm: the held-out metric (mean ± sd over seeds), its paired gain over the untrained encoder
    (`untrained`: of the encoder it trained; mean ± sd, wins), then the mean of each of `keys` at the end, the obvious
    baseline's (`raw/<metric>`, the raw input's score in the same run) first."""
    held = heldout(domain)
    keys = [f"raw/{held}", *(k for k in keys if k != f"raw/{held}")]
    arms = list(dict.fromkeys(a for d, a, _ in results if d == domain))
    seeds = sorted({s for d, _, s in results if d == domain})
    lines = [f"| arm | {held} | gain over untrained | wins | " + " | ".join(keys) + " |",
             "| --- " * (4 + len(keys)) + "|"]
    for a in arms:
        vals = [final(results[(domain, a, s)], held) for s in seeds]
        gains = [v - untrained(results, domain, a, s, held) for v, s in zip(vals, seeds)]
        (m, sd), (g, gsd) = mean_sd(vals), mean_sd(gains)
        cells = ["—" if a == "untrained" and k in UNTRAINED_BLANK else
                 f"{mean_sd([final(results[(domain, a, s)], k) for s in seeds])[0]:.4g}" for k in keys]
        lines.append(f"| {a} | {m:.3f} ± {sd:.3f} | {g:+.3f} ± {gsd:.3f} | {sum(x > 0 for x in gains)}/{len(seeds)} | "
                     + " | ".join(cells) + " |")
    return lines


def along(results: dict, domain: str, arm: str, seed: int, keys: list[str]) -> list[str]:
    """The keys at every evaluation of one run."""
    rows = [r for r in results[(domain, arm, seed)] if "loss" not in r]
    lines = ["| step | " + " | ".join(keys) + " |", "| --- " * (1 + len(keys)) + "|"]
    return lines + [f"| {r['step']} | " + " | ".join(f"{r.get(k, math.nan):.4g}" for k in keys) + " |" for r in rows]


def figures(results: dict, args, out: str, domain: str, groups: dict[str, list[str]]) -> None:
    """One `multissl.report` per group of arms (the first seed's runs overlaid), printed as its folder."""
    from multissl.report import report
    seed, root = int(args.seeds.split(",")[0]), out_root(args, out) / domain
    for name, arms in groups.items():
        runs = [root / f"{a}-s{seed}" for a in arms if (domain, a, seed) in results]
        if runs:
            print(f"figures ({name}, seed {seed}): {report(runs, root / f'report-{name}')}")


def suite_parser(doc: str, option: str, parts: str, arms: str) -> argparse.ArgumentParser:
    """The suites' (tables.py, buffers.py) command line: `option` (--tables, --buffers) lists what they run on,
    every part of the suite by default (`parts`)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(option, default=parts)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default=arms, help="objective names, each optionally with +key=value settings")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--out", default=None)
    p.add_argument("--earlier", default=None, help="comma-separated JSON records of earlier runs of this suite (beside "
                                                   "each results file): the runs they hold are not trained again")
    results.add_argument(p)
    p.add_argument("extra", nargs="*", help="key=value overrides for every run (e.g. a tiny encoder)")
    return p


def suite_name(bench: str, parts: list[str], every: list[str]) -> str:
    """The results file of a suite run: <bench>-suite for every part, else named by the parts run."""
    return f"{bench}-suite" if sorted(parts) == sorted(every) else f"{bench}-{'-'.join(parts)}"


def seed_list(seeds: str) -> list[int]:
    """--seeds of a benchmark: "0,1,2" -> [0, 1, 2]."""
    return [int(s) for s in seeds.split(",")]


def arm_list(arms: str) -> list[str]:
    """--arms of a suite: commas split arms, except inside brackets ("byol,byol+domain.temporal_offset=[1,3]")."""
    out, depth, cur = [], 0, ""
    for ch in arms:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out, cur = out + [cur], ""
        else:
            cur += ch
    return [a for a in out + [cur] if a]


def arm_overrides(arm: str) -> tuple:
    """An arm is an objective name, optionally with `+key=value` settings: "simclr+domain.corruption_rate=0.3"."""
    objective, *settings = arm.split("+")
    return (f"objective={objective}", *settings)


def suite_runs(parts: list[str], arms: list[str], seeds: list[int], steps: int, run,
               earlier: dict | None = None) -> dict:
    """{(part, arm, seed): {"trained": scores, "untrained": scores}}: each arm against its own untrained encoder, the
    same overrides and seed with trainer.max_steps=0 (the same architecture: an arm may change the encoder, or keep
    the token encoder a masked objective needs). run(part, arm, overrides, seed, steps, name) -> scores. Runs that
    `earlier` holds (records.read_records) are taken from it, not trained."""
    out, earlier = {}, earlier or {}
    for part in parts:
        for arm in arms:
            for s in seeds:
                if (part, arm, s) in earlier:
                    out[(part, arm, s)] = earlier[(part, arm, s)]
                    continue
                folder = re.sub(r"[^A-Za-z0-9._-]+", "_", arm)  # a run.dir value cannot hold = [ ] ,
                out[(part, arm, s)] = {k: run(part, arm_overrides(arm), s, n, f"{folder}-s{s}{suffix}")
                                       for k, n, suffix in (("untrained", 0, "-untrained"), ("trained", steps, ""))}
    return out


def paired_gains(results: dict, part: str, arm: str, key, seeds: list[int]) -> list[float]:
    """The trained arm minus its untrained encoder, seed by seed, on one part of a suite (a table, a buffer)."""
    return [results[(part, arm, s)]["trained"][key] - results[(part, arm, s)]["untrained"][key] for s in seeds]


def suite_report(results: dict, parts: list[str], arms: list[str], seeds: list[int], keys: dict, claim: str,
                 prefix: str, baseline: tuple[str, dict] | None = None) -> list[str]:
    """The suites' (tables.py, buffers.py) tables and claims. `keys`: column name -> score key; per part, each arm's
    untrained -> trained means and paired gain (wins); then for each arm, on the `claim` column, the suite's mean
    paired gain with its t over every (part, seed) pair (<prefix>1: positive with t > 2) and the parts that lose more
    than one standard error (<prefix>2: none). `baseline`: (its name, {part: scores}), the obvious baseline's row in
    each part and, per arm, the parts where the trained encoder beats it on the `claim` column."""
    lines = []
    for part in parts:
        lines += [f"\n## {part}\n", "| arm | " + " | ".join(keys) + " |", "| --- " * (1 + len(keys)) + "|"]
        for a in arms:
            cells = []
            for k in keys.values():
                u, t = (mean_sd([results[(part, a, s)][w][k] for s in seeds])[0] for w in ("untrained", "trained"))
                gains = paired_gains(results, part, a, k, seeds)
                cells.append(f"{u:.3f} → {t:.3f} ({mean_sd(gains)[0]:+.3f}, {sum(g > 0 for g in gains)}/{len(seeds)})")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        if baseline:
            lines.append(f"| {baseline[0]} | " + " | ".join(f"{baseline[1][part][k]:.3f}" for k in keys.values()) + " |")
    lines.append("\nCells: untrained → trained, means over seeds (the paired gain, wins)"
                 + (f"; {baseline[0]}: the obvious baseline, no seeds.\n" if baseline else ".\n"))
    for a in arms:
        gains = [g for p in parts for g in paired_gains(results, p, a, keys[claim], seeds)]
        m, sd = mean_sd(gains)
        t = m / (sd / math.sqrt(len(gains))) if sd > 0 else math.copysign(math.inf, m)
        losers = []
        for p in parts:
            pm, psd = mean_sd(paired_gains(results, p, a, keys[claim], seeds))
            if pm < -psd / math.sqrt(len(seeds)):
                losers.append(f"{p} {pm:+.3f}")
        lines.append(f"{a}: {claim}, mean gain {m:+.4f} (sd {sd:.4f}, t {t:.2f}, {sum(g > 0 for g in gains)}/"
                     f"{len(gains)} wins): {prefix}1 {'holds' if m > 0 and t > 2 else 'does not hold'}; {prefix}2 "
                     f"{'holds' if not losers else 'does not hold (' + ', '.join(losers) + ')'}")
        if baseline:
            above = [p for p in parts if mean_sd([results[(p, a, s)]["trained"][keys[claim]] for s in seeds])[0]
                     > baseline[1][p][keys[claim]]]
            lines.append(f"{a}: {claim}, above {baseline[0]} on {len(above)}/{len(parts)}"
                         f"{' (' + ', '.join(above) + ')' if above else ''}")
    return lines
