"""Two CPU processes (torchrun, gloo) against one: one run folder, one metrics row per logged step, and
the same losses — batch statistics are gathered, so the global batch is what matters, not the split."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from multissl.cli import options

ARGS = ["trainer.max_steps=3", "trainer.log_every=1", "data.batch_size=32", "encoder.dim=16", "encoder.depth=1",
        "encoder.heads=2", "trainer.eval_every=0", "objective=simclr"]


def _run(cmd, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in p.stderr.splitlines() if "Error:" in line]
    assert p.returncode == 0, f"exit {p.returncode}: {errors[:1]}\n{p.stderr[-3000:]}"
    return p


def _losses(folder: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows, [(r["step"], r["loss"]) for r in rows if "loss" in r]


@pytest.mark.parametrize("domain", options("domain"))
def test_two_processes_match_one(tmp_path, domain):
    args = [*ARGS, f"domain={domain}"]
    ddp = tmp_path / "ddp"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          "-m", "multissl.train", *args, f"run.dir={ddp}"], cwd=tmp_path)

    # one folder per launch, however many processes; nothing written relative to the cwd
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    assert (ddp / "config.yaml").is_file() and (ddp / "encoder").is_dir()

    rows, ddp_losses = _losses(ddp)
    assert [s for s, _ in ddp_losses] == [1, 2, 3]  # rank 1 writes nothing
    assert len(rows) == 4  # 3 training rows + the final evaluation row
    assert ("knn_acc" in rows[-1] or "state_r2_mean" in rows[-1]) and rows[-1]["step"] == 3

    single = tmp_path / "single"
    _run([sys.executable, "-m", "multissl.train", *args, f"run.dir={single}"], cwd=tmp_path)
    _, one_losses = _losses(single)
    assert [s for s, _ in one_losses] == [1, 2, 3]
    a, b = np.array([l for _, l in ddp_losses]), np.array([l for _, l in one_losses])
    np.testing.assert_allclose(a, b, rtol=1e-4, err_msg=f"2 processes {a.tolist()} vs 1 process {b.tolist()}")
