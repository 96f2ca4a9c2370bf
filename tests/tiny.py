"""Tiny test configurations: a tiny model, the small data the tests use per domain, a mixed table, and `TinyRuns`
(configs under a tmp folder and a metrics.jsonl reader)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from multissl.cli import load_config
from multissl.testing import TINY_ENCODER, assert_every_parameter_learns, item_views  # noqa: F401  (tests' names)
from multissl.train import run

# Small enough that one training step takes well under a second on 2 busy cores.
# evaluation on at most 256 samples per split: what is checked is that it runs and what it logs, not how well
TINY = ("data.batch_size=32", "data.num_workers=0", "trainer.log_every=1", "trainer.eval_every=0", "trainer.eval_samples=256",
        "trainer.baseline=false")  # the untrained-encoder scoring has its own tests (tests/engine/test_baseline.py)
# The rl domain's default buffer is 10,000 CartPole steps (about 40 s to collect on a cold cache); tests use
# one of 1,200 steps with the same settings (cached under its own key). Nothing in them depends on its size.
DOMAIN_DATA = {"rl": ("domain.default.steps=1200",)}


def domain_data(overrides) -> tuple:
    """The DOMAIN_DATA overrides of the domain that `overrides` picks (image when none does)."""
    picked = [a.split("=", 1)[1] for a in overrides if a.startswith("domain=")]
    return DOMAIN_DATA.get(picked[-1] if picked else "image", ())


class TinyRuns:
    def __init__(self, root: Path):
        self.root = root

    def config(self, *overrides, name: str = "run", tiny_encoder: bool = True):
        """TINY(_ENCODER), the domain's test data, then run.dir=<tmp>/<name>, then `overrides` (later win)."""
        enc = TINY_ENCODER if tiny_encoder else ()
        return load_config([*enc, *TINY, *domain_data(overrides), f"run.dir={self.root / name}", *overrides])

    def run(self, *overrides, name: str = "run", tiny_encoder: bool = True) -> Path:
        return run(self.config(*overrides, name=name, tiny_encoder=tiny_encoder))

    @staticmethod
    def metrics(folder: Path) -> list[dict]:
        return [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines() if line]


def write_mixed_table(path: Path, n: int = 120, seed: int = 0) -> Path:
    """A CSV with what users' tables have: numeric columns with missing cells, a text category with a missing
    cell, a boolean, a few-valued integer column and a class target."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n).round(1)
    age[rng.choice(n, n // 6, replace=False)] = np.nan
    income = rng.lognormal(10, 0.5, n).round(0)
    income[rng.choice(n, n // 8, replace=False)] = np.nan
    city = rng.choice(["paris", "lyon", "nice", "lille"], n).astype(object)
    city[rng.choice(n, n // 10, replace=False)] = None
    table = pd.DataFrame({"age": age, "income": income, "city": city, "member": rng.random(n) < 0.4,
                          "children": rng.integers(0, 4, n), "churned": np.where(rng.random(n) < 0.3, "yes", "no")})
    table.to_csv(path, index=False)
    return path


def write_image_folder(root: Path, n_train: int = 48, n_test: int = 16, seed: int = 0) -> Path:
    """PNGs of a few sizes in class subfolders of train/ and test/ (three classes, each its own mean colour, so kNN
    has something to find)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            c = i % 3
            folder = Path(root) / split / ("red", "green", "blue")[c]
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 120, (14 + i % 4, 16, 3))
            pixels[..., c] += 120
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return Path(root)


def write_image_shards(root: Path) -> Path:
    """write_image_folder's images as image shards in root/shards (python -m multissl.shards)."""
    from multissl.shards import convert
    convert(str(write_image_folder(Path(root) / "images")), str(Path(root) / "shards"), ["domain=image"])
    return Path(root) / "shards"


def run_two_processes(script, folder: Path, timeout: int = 120) -> list:
    """`python script <rank> <folder>/init <folder>/<rank>.pt` for ranks 0 and 1 (the script joins a process group
    through the init file and saves its result); both must exit 0, else the test fails with their stderr. Returns
    what each saved."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(folder / "init"), str(folder / f"{r}.pt")],
                              cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    try:
        errs = [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(e[-3000:] for e in errs)
    return [torch.load(folder / f"{r}.pt", weights_only=True) for r in (0, 1)]
