"""Does self-supervised pretraining raise the rl state probe above the untrained encoder? Paired over seeds:

    python benchmarks/rl_pretraining_gain.py [seeds=0-7] [objectives=byol,vicreg] [steps=1000] [out=runs/rl-gain] \
        [jobs=2] [key=value ...]

For every seed it trains the untrained encoder (trainer.max_steps=0) and each objective with
`python -m multissl.train domain=rl encoder=nature_cnn trainer.max_steps=<steps> <key=value ...>` into
<out>/<untrained|objective>-s<seed>; a run that has exported its encoder is read, not trained again, and an
unfinished one resumes. It prints the end-of-run `state_r2_mean` per seed, then per objective the paired gain
over the same seed's untrained encoder: mean, standard deviation, t = mean / (sd / sqrt(n)), and wins.
`jobs` runs share the machine's cores (one thread each when jobs >= cores).
"""
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from multissl.runlog import evaluated

opts = {"seeds": "0-7", "objectives": "byol,vicreg", "steps": "1000", "out": "runs/rl-gain", "jobs": "2"}
extra = []
for arg in sys.argv[1:]:
    key = arg.split("=", 1)[0]
    if key in opts:
        opts[key] = arg.split("=", 1)[1]
    else:
        extra.append(arg)
lo, _, hi = opts["seeds"].partition("-")
seeds = list(range(int(lo), int(hi or lo) + 1))
objectives = [o for o in opts["objectives"].split(",") if o]
out, jobs = Path(opts["out"]), int(opts["jobs"])
threads = str(max(1, (os.cpu_count() or 1) // jobs))


def run(name: str, seed: int) -> float:
    folder = out / f"{name}-s{seed}"
    steps = 0 if name == "untrained" else opts["steps"]
    if not evaluated(folder, int(steps)):
        cmd = [sys.executable, "-m", "multissl.train", "domain=rl", "encoder=nature_cnn", f"trainer.max_steps={steps}",
               "trainer.eval_every=250", f"trainer.seed={seed}", *extra, f"run.dir={folder}"]
        cmd += [] if name == "untrained" else [f"objective={name}"]
        folder.parent.mkdir(parents=True, exist_ok=True)
        log = folder.parent / f"{folder.name}.log"
        with open(log, "w") as f:
            rc = subprocess.run(cmd, stdout=f, stderr=f,
                                env={**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}).returncode
        if rc:
            sys.exit(f"{folder.name} failed (exit {rc}); its output is in {log}")
    rows = [json.loads(line) for line in open(folder / "metrics.jsonl")]
    return [r for r in rows if "state_r2_mean" in r][-1]["state_r2_mean"]  # the end-of-run evaluation


names = ["untrained", *objectives]
with ThreadPoolExecutor(jobs) as pool:
    futures = {(n, s): pool.submit(run, n, s) for s in seeds for n in names}
r2 = {key: f.result() for key, f in futures.items()}

print("seed  " + "  ".join(f"{n:>9}" for n in names))
for s in seeds:
    print(f"{s:>4}  " + "  ".join(f"{r2[n, s]:9.3f}" for n in names))
print("mean  " + "  ".join(f"{sum(r2[n, s] for s in seeds) / len(seeds):9.3f}" for n in names))
for name in objectives:
    gain = [r2[name, s] - r2["untrained", s] for s in seeds]
    m = sum(gain) / len(gain)
    sd = math.sqrt(sum((g - m) ** 2 for g in gain) / (len(gain) - 1)) if len(gain) > 1 else float("nan")
    t = m / (sd / math.sqrt(len(gain))) if sd > 0 else float("nan")
    print(f"{name}: gain over untrained mean {m:+.4f}, sd {sd:.4f}, t {t:.2f}, "
          f"wins {sum(g > 0 for g in gain)}/{len(gain)}")
