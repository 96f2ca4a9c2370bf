"""Does distillation pay? A larger encoder trained longer (the teacher) distilled into the domain's default student for
the student's own budget, against the student's own SSL run at equal steps:

    python benchmarks/distill.py --domains image,audio,text [--seeds 0,1,2] [--steps 500] [--teacher-steps 1000] \
        [--jobs 2] [--out runs/distill] [--earlier results/suite-image.json,...]

Per domain, on the first set of its suite (benchmarks/sets: the embedded default data): the teacher is the default
recipe with TEACHER's settings (a wider, deeper transformer; for text, whose default student is the bag of n-grams, a
transformer), seed 0, `--teacher-steps`; the student's own run is the default recipe (arm `default`, read from the
suites' records with --earlier), the distilled student the same recipe with objective=distill and the teacher's run
as objective.teacher, same seeds and steps. Scores are the suite's (held-out kNN accuracy).

Decided before any run, per domain:

  D1  The distilled student's score (mean over seeds) is within 5 % of the teacher's: at least 0.95 x it.
  D2  The distilled student is above the student's own SSL run at equal steps on every seed (paired).

Embed speed: held-out samples per second through `embed`'s path (preprocess + encoder, batches of 256, one thread) of
the teacher and of the student (the distilled run's export: the student's architecture).

Where the knowledge sits (a diagnostic, not a criterion): the held-out kNN of the distilled student's projection to the
teacher's space (the objective's projector applied to its representation), scored as the runs score their encoders.
"""
import argparse
import json
import re
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

import suites
from paired import mean_sd, seed_list
from records import write_records
from results import add_argument, command_line, write

TEACHER = {"image": "encoder.dim=128+encoder.depth=6+encoder.heads=8",
           "audio": "encoder.dim=128+encoder.depth=6+encoder.heads=8",
           "video": "encoder.dim=128+encoder.depth=6+encoder.heads=8",
           "text": "encoder=transformer+encoder.dim=128+encoder.depth=4+encoder.heads=8"}


def suite(domain, name, seeds, arms, steps, args, earlier=None) -> dict:
    ns = argparse.Namespace(domain=domain, sets=name, seeds=seeds, arms=arms, steps=steps, jobs=args.jobs,
                            scale=args.scale, out=args.out, earlier=earlier, extra=args.extra)
    return suites.run_suite(ns)[0]


def folder(args, domain, name, arm, seed) -> Path:
    return Path(args.out) / domain / name / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', arm)}-s{seed}"


@torch.no_grad()
def embed_speed(run: Path, batch: int = 256, repeats: int = 3) -> float:
    """Held-out samples per second of the run's export: preprocess + encoder on one thread (best of `repeats`)."""
    import multissl
    from multissl.build import build_domain
    from multissl.contracts import Domain, optional
    from multissl.data import collate_of
    torch.set_num_threads(1)
    enc = multissl.load_encoder(run)
    domain = build_domain(OmegaConf.load(run / "config.yaml"), state=enc.domain.state())
    split = domain.dataset("test") or domain.dataset("train")
    xs = [split[i]["x"] for i in range(min(batch, len(split)))]
    raw = optional(domain, Domain, "eval_raw")
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        if raw is not None:
            x = domain.preprocess(torch.stack([raw(v) for v in xs]))
            x, pad = x if isinstance(x, tuple) else (x, None)
        else:
            x, pad = collate_of(domain)([domain.eval_input(v) for v in xs])
        enc.encoder(x) if pad is None else enc.encoder(x, pad=pad)
        best = max(best, len(xs) / (time.perf_counter() - start))
    return best


class Projected(torch.nn.Module):
    """The distilled student followed by its objective's projector: (tokens, projection [b teacher_dim])."""

    def __init__(self, encoder, projector):
        super().__init__()
        self.encoder, self.projector = encoder, projector

    def forward(self, x, pad=None):
        t, pooled = self.encoder(x) if pad is None else self.encoder(x, pad=pad)
        return t, self.projector(pooled)


@torch.no_grad()
def teacher_space_knn(run: Path) -> float:
    """Held-out kNN accuracy of the distilled run's projection to the teacher's space, on the run's own eval sets."""
    import multissl
    from multissl import monitor
    from multissl.evaluate import run_config, run_objective
    cfg = run_config(run)
    enc = multissl.load_encoder(run)
    enc.domain.data = cfg["data"]
    limit = (cfg.get("trainer") or {}).get("eval_samples")
    train_set, test_set = monitor.eval_sets(enc.domain.dataset("train"), enc.domain.dataset("test"), limit)
    projected = Projected(enc.encoder, run_objective(run, cfg, enc.domain, enc.encoder).projector).eval()
    return monitor.heldout_metrics(projected, enc.domain, train_set, test_set, "cpu")[0]["knn_acc"]


def measure(domain: str, args) -> tuple[list[str], dict]:
    name = next(iter(suites.sets_of(domain)))
    teacher_arm = f"default+{TEACHER[domain]}"
    t = suite(domain, name, "0", teacher_arm, args.teacher_steps, args)[(name, teacher_arm, 0)]["trained"]
    teacher = folder(args, domain, name, teacher_arm, 0)
    distill_arm = f"distill+objective.teacher={teacher}"
    earlier = [f for f in (args.earlier or "").split(",") if f and json.loads(Path(f).read_text())["suite"] == domain]
    runs = suite(domain, name, args.seeds, f"default,{distill_arm}", args.steps, args, ",".join(earlier) or None)
    seeds = seed_list(args.seeds)
    own = [runs[(name, "default", s)]["trained"] for s in seeds]
    dist = [runs[(name, distill_arm, s)]["trained"] for s in seeds]
    (d, dsd), (o, osd) = mean_sd(dist), mean_sd(own)
    above = sum(a > b for a, b in zip(dist, own))
    p, psd = mean_sd([teacher_space_knn(folder(args, domain, name, distill_arm, s)) for s in seeds])
    v_t, v_s = embed_speed(teacher), embed_speed(folder(args, domain, name, distill_arm, seeds[0]))
    row = (f"| {domain} ({name}) | {TEACHER[domain].replace('+', ' ')}, {args.teacher_steps} steps: {t:.3f} | "
           f"{o:.3f} ± {osd:.3f} | {d:.3f} ± {dsd:.3f} | {d / t:.3f} | {above}/{len(seeds)} | "
           f"{p:.3f} ± {psd:.3f} | {v_t:,.0f} | {v_s:,.0f} ({v_s / v_t:.1f}x) |")
    verdict = [f"{domain}: D1 distilled {d:.3f} = {d / t:.3f} x the teacher's {t:.3f}: "
               f"{'holds' if d >= 0.95 * t else 'does not hold'}",
               f"{domain}: D2 above the student's own SSL on {above}/{len(seeds)} seeds (mean {d - o:+.3f}): "
               f"{'holds' if above == len(seeds) else 'does not hold'}"]
    record = {(name, "teacher", 0): {"trained": t}} | {(name, "own", s): {"trained": v} for s, v in zip(seeds, own)} \
        | {(name, "distilled", s): {"trained": v} for s, v in zip(seeds, dist)}
    return [row, *verdict], record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domains", default="image,audio,text")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--teacher-steps", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--scale", type=float, default=1.0, help="sets' sample counts scaled (tests build tiny ones)")
    p.add_argument("--out", default="runs/distill")
    p.add_argument("--earlier", default=None, help="the suites' records (comma-separated, any domains): the default "
                                                   "runs they hold are read instead of trained")
    add_argument(p)
    p.add_argument("extra", nargs="*", help="key=value overrides for every run (e.g. a tiny encoder in tests)")
    args = p.parse_args(argv)
    lines = ["| domain (set) | teacher (seed 0) | student's own SSL | distilled student | distilled / teacher | "
             "distilled above own | its projection to the teacher's space | teacher samples/s | student samples/s |",
             "| --- " * 9 + "|"]
    verdicts, records = [], {}
    for domain in args.domains.split(","):
        (row, *verdict), record = measure(domain, args)
        lines.append(row)
        verdicts += verdict
        records |= {(f"{domain}/{k[0]}", *k[1:]): v for k, v in record.items()}
    lines += ["", f"Means over seeds {args.seeds} (± sd); {args.steps} steps for both students.", "", *verdicts]
    print("\n".join(lines))
    target = Path(args.results) / "distill.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_records(target.with_suffix(".json"), "distill", args.steps, records, command_line(__file__, argv))
    write(target, "\n".join(lines), command_line(__file__, argv),
          note="Criteria D1, D2 fixed in this benchmark's docstring before any run; embed speed on one thread.")


if __name__ == "__main__":
    main()
