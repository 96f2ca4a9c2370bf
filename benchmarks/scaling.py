"""What scales, as ratios measured side by side in one run: the gradient exchange overlapped with the backward pass
(trainer.strategy=ddp) against the average after it (average), step time at 2 processes; sharded (fsdp) against
replicated (ddp) training, memory per process for ViT-S- and ViT-B-sized encoders; and a compiled model
(trainer.compile=true) against eager, and bf16 autocast against float32, step time on 1 process. A step is the model step of the engine (forward,
backward, the strategy's gradient exchange, AdamW) on a pre-made batch of 64-px images in 16-px patches.

    python benchmarks/scaling.py                                    # every row, on this machine (CPU: gloo)
    python benchmarks/scaling.py --rows compile --steps 10
    python benchmarks/scaling.py --device cuda                      # on GPUs (nccl), bf16
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import results  # noqa: E402

IMAGES = ["domain=image", "domain.image_size=64", "domain.patch_size=16", "domain.channels=3", "data.num_workers=0"]
PHOTOS = 0.1  # benchmarks/realistic.py's 224-px image folder at this scale: 25 photos, cropped to 64 px
ROWS = ("overlap", "shard", "compile", "precision")


def setup(preset: str, batch: int, strategy_name: str, compiled: bool, device: str, precision: str):
    """The engine's model, optimizer, precision and one fixed batch (this process's part of it)."""
    import torch
    from realistic import image_folder
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from multissl import dist, strategy
    from multissl.build import build_domain, build_models
    from multissl.cli import load_config
    from multissl.compiled import compile_model
    from multissl.data import make_views, objective_loader, to_device
    from multissl.optim import build_optimizer
    from multissl.precision import Precision
    from multissl.train import prepare_model
    cfg = load_config([*IMAGES, f"data.path={image_folder(PHOTOS)}", f"encoder={preset}", "objective=simclr", f"data.batch_size={batch}",
                       f"trainer.strategy={strategy_name}"])
    AcceleratorState._reset_state()
    acc = Accelerator(cpu=device == "cpu")
    torch.manual_seed(0)
    domain = build_domain(cfg)
    model = prepare_model(*build_models(cfg, domain), acc)
    if compiled:
        compile_model(model, dynamic=False)
    runner = strategy.wrap(model, strategy_name)
    opt = build_optimizer("adamw", [model], 1e-4, 0.05, (0.9, 0.999))
    loader = objective_loader(domain.dataset("train"), domain, model.objective, 0, batch, 0, 1, dist.rank(),
                              dist.world_size())
    fixed = make_views(domain, to_device(next(iter(loader)), acc.device))
    fixed.pop("skipped")
    return model, runner, opt, fixed, Precision(precision, acc.device), acc.device


def stepper(model, runner, opt, batch, precision, name):
    import torch

    from multissl import strategy
    sched = {"ema": 0.99, "lr": 1e-4, "wd": 0.05, "step": 0, "total_steps": 1, "progress": 0.0}

    def step():
        with precision.autocast():
            loss, _ = runner(batch, sched)
        loss.backward()
        strategy.after_backward(model, name)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if batch["views"][0].is_cuda:
            torch.cuda.synchronize()
    return step


def timed(step, n: int) -> list[float]:
    out = []
    for _ in range(n):
        tic = time.perf_counter()
        step()
        out.append((time.perf_counter() - tic) * 1e3)
    return out


def worker(kind: str, args) -> dict:
    """One process of a launch (torchrun for overlap and shard): its figures, printed as JSON by rank 0."""
    import resource

    import torch

    from multissl import dist
    torch.manual_seed(0)
    if kind == "overlap":  # both strategies in this launch, alternating blocks of steps
        arms = {name: stepper(*setup(args.preset, args.batch, name, False, args.device, args.precision)[:5], name)
                for name in ("ddp", "average")}
        ms = {name: [] for name in arms}
        for name, step in arms.items():
            timed(step, 2)  # warm: allocator, DDP's bucket rebuild after its first step
        for _ in range(args.blocks):
            for name, step in arms.items():
                ms[name] += timed(step, args.steps)
        return {name: statistics.median(v) for name, v in ms.items()}
    if kind == "shard":  # one strategy per launch: peak memory is per process
        model, runner, opt, batch, precision, device = setup(args.preset, args.batch, args.strategy, False,
                                                             args.device, args.precision)
        step = stepper(model, runner, opt, batch, precision, args.strategy)
        if device.type == "cuda":  # the steps' peak, not the whole model's on its way to being sharded
            torch.cuda.reset_peak_memory_stats()
        ms = timed(step, args.steps + 1)[1:]
        local = lambda t: t.to_local() if hasattr(t, "to_local") else t  # noqa: E731
        held = sum(local(p).numel() * local(p).element_size() for p in model.parameters())
        held += sum(local(v).numel() * local(v).element_size() for st in opt.state.values() for k, v in st.items()
                    if k != "step")
        peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        figures = torch.tensor([held, peak], dtype=torch.float64)
        return {"ms": statistics.median(ms), "held_mib": float(figures[0]) / 2**20,
                "peak_mib": float(dist.all_reduce(figures, "mean")[1]) / 2**20, "world": dist.world_size()}
    if kind == "precision":  # float32 and bf16 autocast in this process, alternating blocks of steps
        arms = {name: stepper(*setup(args.preset, args.batch, "ddp", False, args.device, name)[:5], "ddp")
                for name in ("bf16", "no")}
        ms = {name: [] for name in arms}
        for _ in range(args.blocks):
            for name, step in arms.items():
                timed(step, 1)
                ms[name] += timed(step, args.steps)
        return {name: statistics.median(v) for name, v in ms.items()}
    arms = {}  # compile: eager and compiled models in this process, alternating blocks of steps
    for compiled in (False, True):
        tic = time.perf_counter()
        step = stepper(*setup(args.preset, args.batch, "ddp", compiled, args.device, args.precision)[:5], "ddp")
        timed(step, 3)  # the first calls compile
        arms[compiled] = (step, time.perf_counter() - tic)
    ms = {c: [] for c in arms}
    for _ in range(args.blocks):
        for c, (step, _) in arms.items():
            ms[c] += timed(step, args.steps)
    return {"eager": statistics.median(ms[False]), "compiled": statistics.median(ms[True]),
            "compile_s": arms[True][1] - arms[False][1]}


def launch(kind: str, args, processes: int, **extra) -> dict:
    """worker(kind) in fresh processes (this one imports no torch: a child's peak memory counts its parent's)."""
    opts = [f"--{k}={v}" for k, v in {"preset": args.preset, "batch": args.batch, "steps": args.steps,
                                      "blocks": args.blocks, "device": args.device, "precision": args.precision,
                                      **extra}.items()]
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] \
        if processes > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // processes))}
    done = subprocess.run([*head, __file__, "--worker", kind, *opts], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default=None, help="no | bf16 (default: bf16 on cuda, no on cpu)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per block")
    p.add_argument("--blocks", type=int, default=3, help="alternating blocks per arm")
    p.add_argument("--batch", type=int, default=16, help="global batch")
    p.add_argument("--presets", default="vit_s,vit_b", help="encoders of the shard row")
    p.add_argument("--preset", default="vit_s", help="encoder of the overlap and compile rows")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--strategy", help=argparse.SUPPRESS)
    results.add_argument(p)
    args = p.parse_args(argv)
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "no")
    if args.worker:
        out = worker(args.worker, args)
        if int(os.environ.get("RANK", 0)) == 0:
            print(json.dumps(out), flush=True)
        return []
    rows = args.rows.split(",")
    from realistic import image_folder
    image_folder(PHOTOS)  # written once, here, before processes race to write it
    lines = [f"device {args.device}, precision {args.precision}, global batch {args.batch} of 64-px images, "
             f"medians of {args.blocks} alternating blocks of {args.steps} steps", "",
             "| row | encoder | processes | A | B | A / B |", "| --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)

    def add(line):
        lines.append(line)
        print(line, flush=True)
    if "overlap" in rows:
        r = launch("overlap", args, 2)
        add(f"| step time: ddp (A) vs average (B) | {args.preset} | 2 | {r['ddp']:.0f} ms | {r['average']:.0f} ms | "
            f"{r['ddp'] / r['average']:.2f} |")
    if "shard" in rows:
        for preset in args.presets.split(","):
            a = launch("shard", args, 2, strategy="fsdp", preset=preset)
            b = launch("shard", args, 2, strategy="ddp", preset=preset)
            add(f"| weights + AdamW state per process: fsdp (A) vs ddp (B) | {preset} | 2 | {a['held_mib']:.0f} MiB | "
                f"{b['held_mib']:.0f} MiB | {a['held_mib'] / b['held_mib']:.2f} |")
            add(f"| peak memory per process: fsdp (A) vs ddp (B) | {preset} | 2 | {a['peak_mib']:.0f} MiB | "
                f"{b['peak_mib']:.0f} MiB | {a['peak_mib'] / b['peak_mib']:.2f} |")
            add(f"| step time: fsdp (A) vs ddp (B) | {preset} | 2 | {a['ms']:.0f} ms | {b['ms']:.0f} ms | "
                f"{a['ms'] / b['ms']:.2f} |")
    if "compile" in rows:
        r = launch("compile", args, 1)
        add(f"| step time: compiled (A) vs eager (B); compiling took {r['compile_s']:.0f} s | {args.preset} | 1 | "
            f"{r['compiled']:.0f} ms | {r['eager']:.0f} ms | {r['compiled'] / r['eager']:.2f} |")
    if "precision" in rows:
        r = launch("precision", args, 1)
        add(f"| step time: bf16 autocast (A) vs float32 (B) | {args.preset} | 1 | {r['bf16']:.0f} ms | {r['no']:.0f} ms | "
            f"{r['bf16'] / r['no']:.2f} |")
    results.write(Path(args.results) / f"scaling-{args.device.split(':')[0]}.md", "\n".join(lines[2:]),
                  results.command_line(__file__, argv), note=lines[0] + ".")
    return lines


if __name__ == "__main__":
    main()
