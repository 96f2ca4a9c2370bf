"""The transformer's size presets side by side: parameters, memory per sample and step time of the model step (forward,
backward and AdamW on a pre-made batch, benchmarks/throughput.py's `model_ms`) on 224-px images in 16-px patches
(196 tokens; the realistic image folder of benchmarks/realistic.py), in bf16 autocast by default. Each (preset, batch) runs in a fresh process, whose peak resident memory
is read when it ends: memory per sample is the difference between the batch's and a batch of one's, over the extra
samples, so the weights, their gradients and AdamW's state cancel out.

    python benchmarks/encoders.py                                   # transformer, vit_s, vit_b, vit_l; mae
    python benchmarks/encoders.py --presets vit_s,vit_b --objective simclr --batch 8 --steps 3
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))
import results  # noqa: E402

IMAGES = ["domain.image_size=224", "domain.patch_size=16", "domain.channels=3"]  # the folder is 224-px RGB


def parameters(preset: str) -> int:
    import torch

    from multissl.cli import load_config
    from multissl.domains.image import ImageDomain
    from multissl.encoder import Encoder
    cfg = load_config([f"encoder={preset}", *IMAGES])
    with torch.device("meta"):
        encoder = Encoder(ImageDomain(image_size=224, channels=3, patch_size=16),
                          **{k: v for k, v in cfg.encoder.items() if k != "_target_"})
    return sum(p.numel() for p in encoder.parameters())


def child(preset: str, batch: int, objective: str, steps: int, precision: str) -> dict:
    """One (preset, batch) in this process: ms per model step after throughput.WARM steps."""
    import throughput
    args = SimpleNamespace(device="cpu", precision=precision, steps=steps, scale=0.1)  # 25 photos suffice
    bench = throughput.Bench(args, "image", "real", objective,
                             [f"encoder={preset}", *IMAGES, f"data.batch_size={batch}", "data.num_workers=0"])
    model, opt = bench.model()
    from multissl.data import make_views, to_device
    fixed = make_views(bench.domain, to_device(next(iter(bench.loader(model.objective, 1))), bench.device))
    bench.finite = True
    ms = bench.timed([fixed] * (throughput.WARM + steps), lambda i, x: bench.step(model, opt, x, i))
    return {"ms": ms, "finite": bench.finite}


def measure(preset: str, batch: int, args) -> dict:
    """child() in a fresh process: its figures and its peak resident memory (this process imports no torch: a
    child's peak counts its parent's memory at the fork)."""
    cmd = [sys.executable, __file__, "--child", preset, str(batch), "--objective", args.objective, "--steps",
           str(args.steps), "--precision", args.precision]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--presets", default="transformer,vit_s,vit_b,vit_l")
    p.add_argument("--objective", default="mae")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=2, help="timed steps (after throughput.WARM)")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--child", nargs=2, metavar=("PRESET", "BATCH"), help=argparse.SUPPRESS)
    results.add_argument(p)
    args = p.parse_args(argv)
    if args.child:
        import resource
        row = child(args.child[0], int(args.child[1]), args.objective, args.steps, args.precision)
        row["params"] = parameters(args.child[0])
        row["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        print(json.dumps(row))
        return [row]
    rows = []
    for preset in args.presets.split(","):
        one, full = measure(preset, 1, args), measure(preset, args.batch, args)
        rows.append({"preset": preset, "params": full["params"], "ms": full["ms"],
                     "samples_per_s": args.batch / full["ms"] * 1e3, "rss_mib": full["rss_mib"],
                     "mib_per_sample": (full["rss_mib"] - one["rss_mib"]) / (args.batch - 1),
                     "finite": one["finite"] and full["finite"]})
        print(f"encoders: {preset}: {rows[-1]['ms']:.0f} ms a step", file=sys.stderr)
    lines = ["| encoder | parameters | ms per step | samples/s | peak RSS MiB | MiB per sample | finite |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['preset']} | {r['params'] / 1e6:.1f}M | {r['ms']:.0f} | {r['samples_per_s']:.2f} | "
              f"{r['rss_mib']:.0f} | {r['mib_per_sample']:.0f} | {'yes' if r['finite'] else 'NO'} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    results.write(Path(args.results) / "encoders.md", text, results.command_line(__file__, argv), note=(
        f"{args.objective} model steps (forward, backward, AdamW; a pre-made batch of {args.batch}, "
        f"{args.precision}) on 224-px images in 16-px patches, {args.steps} timed after 2 warm-up steps, each "
        f"encoder in fresh processes; memory per sample = (peak RSS at batch {args.batch} - "
        f"at batch 1) / {args.batch - 1}."))
    return rows


if __name__ == "__main__":
    main()
