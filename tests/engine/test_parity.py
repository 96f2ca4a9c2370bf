"""Every domain x objective: 2 processes (gloo) give the loss and gradients of 1 process on the same global
batch."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from multissl.cli import options

WORKER = str(Path(__file__).with_name("parity_worker.py"))
PAIRS = [f"{d}-{o}" for d in options("domain") for o in options("objective")]
TOL = 1e-5


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    d = tmp_path_factory.mktemp("parity")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, WORKER, str(d / "one.pt")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          WORKER, str(d / "two.pt")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    return torch.load(d / "one.pt", weights_only=True), torch.load(d / "two.pt", weights_only=True)


@pytest.mark.parametrize("pair", PAIRS)
def test_two_processes_match_one(results, pair):
    one, two = results[0][pair], results[1][pair]
    assert two["loss"] == pytest.approx(one["loss"], rel=TOL, abs=TOL)
    assert one["grads"].keys() == two["grads"].keys() and len(one["grads"]) > 0
    for k, g in one["grads"].items():
        torch.testing.assert_close(two["grads"][k], g, rtol=TOL, atol=TOL, msg=lambda m: f"{pair} {k}: {m}")
