"""A GPU check: a short self-contained run of one objective per family on every domain at the realistic sizes
(224-px JPEGs, 10-s clips, 84 x 84 x 4 stacks, a 50-column table), in one process, printing samples/s, the data
share of the step, peak device memory and whether every loss stayed finite (exit status 1 if not).

    python benchmarks/gpu_check.py                        # CUDA when there is one: bf16, 300 steps, then the
                                                          # strategy, compile and precision rows (benchmarks/scaling.py)
    python benchmarks/gpu_check.py --device cpu --steps 1 --scale 0.03 -- data.batch_size=8   # the CI smoke test
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import results  # noqa: E402
from throughput import FAMILIES, Bench  # noqa: E402


def main(argv=None) -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--precision", default="bf16" if cuda else "no", choices=["no", "bf16"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--scale", type=float, default=1.0, help="realistic data set size factor")
    p.add_argument("--domains", default="image,audio,rl,tabular,text,video")
    p.add_argument("--objectives", default=FAMILIES)
    p.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=cuda,
                   help="then benchmarks/scaling.py's rows (strategies on 2+ GPUs, compile, precision)")
    results.add_argument(p)
    p.add_argument("overrides", nargs="*", help="training overrides, e.g. data.batch_size=128")
    args = p.parse_args(argv)
    gpu = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "none (CPU)"
    setting = f"device {args.device} ({gpu}), precision {args.precision}, {args.steps} steps"
    print(setting, flush=True)
    lines = ["| domain | objective | encoder | batch | samples/s | data share | peak memory GiB | loss finite |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    ok = True
    for domain in args.domains.split(","):
        for objective in args.objectives.split(","):
            bench = Bench(args, domain, "real", objective, args.overrides)
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            row = bench.measure(framework=False, host=False)
            peak = torch.cuda.max_memory_allocated() / 2 ** 30 if args.device.startswith("cuda") else float("nan")
            ok &= bench.finite
            lines.append(f"| {domain} | {objective} | {row['encoder']} | {row['batch']} | {row['samples_per_s']:.0f} | "
                         f"{row['data_share']:.0%} | {peak:.2f} | {bench.finite} |")
            print(lines[-1], flush=True)
    results.write(Path(args.results) / "gpu-check.md", "\n".join(lines), results.command_line(__file__, argv),
                  note=setting + ".")
    if args.scaling:
        import scaling
        several = args.device.startswith("cuda") and torch.cuda.device_count() > 1
        scaling.main(["--device", args.device, "--rows", ",".join(scaling.ROWS) if several else "compile,precision",
                      "--results", str(args.results)])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
