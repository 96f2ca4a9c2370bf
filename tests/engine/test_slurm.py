"""examples/slurm/train.sbatch as SLURM would run it, with srun and scontrol standing in (one task on this machine):
SIGUSR1 before the time limit checkpoints and stops the run with exit 138, the script requeues the job, and the
requeued job resumes into the same run folder and logs the losses of a run that was never stopped, bit for bit."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "examples" / "slurm" / "train.sbatch"
ARGS = ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "data.batch_size=32", "trainer.log_every=1",
        "trainer.eval_every=0", "trainer.eval_samples=128", "trainer.baseline=false", "trainer.max_steps=40",
        "trainer.checkpoint_every=1000"]
SRUN = """#!/bin/bash
# srun's stand-in: its options dropped, one task, whose pid is kept so the test can signal it as SLURM does
while [[ "$1" == --* ]]; do shift; done
SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NTASKS=1 SLURM_NTASKS_PER_NODE=1 "$@" &
echo $! >> "$FAKE_SLURM/pids"
wait $!
"""
SCONTROL = """#!/bin/bash
if [ "$1" = show ]; then echo 127.0.0.1; else echo "$*" >> "$FAKE_SLURM/scontrol"; fi
"""


def losses(folder: Path) -> list:
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def stepped(folder: Path, step: int) -> bool:
    try:
        return any(s >= step for s, _ in losses(folder))
    except (FileNotFoundError, ValueError):  # not written yet, or a line being written
        return False


@pytest.mark.slow
def test_the_slurm_example_requeues_on_sigusr1_and_the_requeued_job_resumes_exactly(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "FAKE_SLURM": str(tmp_path), "SLURM_JOB_ID": "42", "SLURM_JOB_NAME": "t", "SLURM_JOB_NODELIST": "node0",
           "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    straight = subprocess.Popen([sys.executable, "-m", "multissl.train", *ARGS, f"run.dir={tmp_path / 'straight'}"],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    job = subprocess.Popen(["bash", str(SCRIPT), *ARGS], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    run = tmp_path / "runs" / "t-42"  # named after the job, which a requeued job keeps
    deadline = time.monotonic() + 120
    while not stepped(run, 2) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(int((tmp_path / "pids").read_text().split()[0]), signal.SIGUSR1)  # SLURM's --signal=USR1@…
    out, err = job.communicate(timeout=120)
    assert job.returncode == 128 + signal.SIGUSR1, err[-2000:]
    assert (tmp_path / "scontrol").read_text().split() == ["requeue", "42"] and "requeueing job 42" in out
    stopped_at = losses(run)[-1][0]
    assert stopped_at < 40 and (run / "checkpoints" / f"step_{stopped_at:08d}.pt").exists()
    again = subprocess.run(["bash", str(SCRIPT), *ARGS], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)  # the requeued job
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "scontrol").read_text().split() == ["requeue", "42"]  # finished: not requeued again
    assert straight.wait(300) == 0, straight.stderr.read()[-2000:]
    assert losses(run) == losses(tmp_path / "straight") and [s for s, _ in losses(run)] == list(range(1, 41))
