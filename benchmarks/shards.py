"""The same run from files and from their shards: scikit-learn's digits written as a folder of PNGs (train/ and test/,
a class subfolder per digit: the 80/20 split of the embedded default), converted once with `python -m multissl.shards`,
then one training per source, each in a fresh process on an empty multissl cache:

    python -m multissl.train domain=image objective=<o> data.path=<source> trainer.max_steps=<steps> …

from the folder, from the shards on disk, and from the shards in object storage (a local S3 server, moto, on
127.0.0.1; left out when moto is not installed). Success, set before measuring: the held-out kNN and probe accuracy
and the last loss are the same, digit for digit, from every source. The seconds are the whole process's.

    python benchmarks/shards.py                          # simclr, 300 steps
    python benchmarks/shards.py --steps 3 --samples 100 -- data.batch_size=32
"""
import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
import results  # noqa: E402

FIGURES = ("knn_acc", "probe_test_acc")


def digits_folder(root: Path, samples: int | None = None) -> Path:
    """The digits as 8x8 grayscale PNGs under root/{train,test}/<digit>/, the embedded default's split (its first
    `samples` of each split when given)."""
    from PIL import Image

    from multissl.domains.image.sources import digits_split
    if (root / ".done").exists():
        return root
    for split, ds in digits_split().items():
        for i in range(min(len(ds), samples or len(ds))):
            item = ds[i]
            folder = root / split / str(item["y"])
            folder.mkdir(parents=True, exist_ok=True)
            out = io.BytesIO()
            Image.fromarray(item["x"][0].numpy()).save(out, format="PNG")
            (folder / f"{i:04d}.png").write_bytes(out.getvalue())
    (root / ".done").touch()
    return root


def train(path: str, steps: int, objective: str, overrides: list[str], env: dict, work: Path) -> dict:
    """One training from data.path=<path> in a fresh process: its final metrics and seconds."""
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "multissl.train", "domain=image", f"objective={objective}", f"data.path={path}",
               f"trainer.max_steps={steps}", "trainer.eval_every=0", "trainer.baseline=false", f"run.dir={run}",
               *overrides]
        tic = time.perf_counter()
        done = subprocess.run(cmd, env={**env, "MULTISSL_CACHE": str(Path(tmp) / "cache")}, capture_output=True,
                              text=True)
        seconds = time.perf_counter() - tic
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    return {"loss": [r["loss"] for r in rows if "loss" in r][-1], **{k: rows[-1][k] for k in FIGURES},
            "seconds": seconds}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--objective", default="simclr")
    p.add_argument("--samples", type=int, default=None, help="the first N digits of each split (default: all)")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "multissl-shards-bench"),
                   help="folder of the PNGs and shards (kept) and the runs (default: %(default)s)")
    results.add_argument(p)
    p.add_argument("overrides", nargs="*", help="training overrides (after --)")
    args = p.parse_args(argv)
    from multissl.errors import UserError
    from multissl.shards import convert
    work = Path(args.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.samples}" if args.samples else ""
    folder = digits_folder(work / f"digits{tag}", args.samples)
    shards = work / f"shards{tag}"
    if not (shards / "multissl-shards.json").exists():
        convert(str(folder), str(shards), ["domain=image"])
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = []
    for source, path in (("folder of PNGs", str(folder)), ("shards on disk", str(shards))):
        rows.append({"source": source, **train(path, args.steps, args.objective, args.overrides, env, work)})
    try:
        from multissl.testing.storage import local_s3
        with local_s3("data") as bucket:
            url = bucket.upload(shards, "digits")
            rows.append({"source": "shards in S3 (local server)",
                         **train(url, args.steps, args.objective, args.overrides, {**env, **bucket.env}, work)})
    except UserError:  # moto absent: no local server
        print("shards: moto is not installed; the S3 row is left out", file=sys.stderr)
    same = all(all(r[k] == rows[0][k] for k in ("loss", *FIGURES)) for r in rows)
    lines = ["| data.path | last loss | knn_acc | probe_test_acc | seconds |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['source']} | {r['loss']:.6f} | {r['knn_acc']:.4f} | {r['probe_test_acc']:.4f} | "
              f"{r['seconds']:.0f} |" for r in rows]
    text = "\n".join(lines) + f"\n\nThe same figures from every source: {'yes' if same else 'NO'}."
    print(text)
    results.write(Path(args.results) / "shards.md", text, results.command_line(__file__, argv), note=(
        f"{args.objective}, {args.steps} steps on the digits as PNG files, from the folder and from its shards "
        f"(python -m multissl.shards), one fresh process each on an empty cache, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}. "
        f"Success, set before measuring: the same last loss and held-out figures from every source."))
    return rows


if __name__ == "__main__":
    main()
