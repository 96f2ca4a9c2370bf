"""Processes stop together and hold one state (multissl.stop, multissl.build): a SIGTERM to one process of two stops
both at the same step with a checkpoint, and the relaunch resumes exactly; a UserError on one process ends both at
once with its message shown once; a hung process ends the run after trainer.timeout_s; two "nodes" on one machine, each with its own empty cache and no shared run folder,
train on the main process's tokenizer, match one process and resume from the main node's checkpoint; two nodes that
meet through torchrun's c10d rendezvous match one process.
The processes run tests/engine/fault_worker.py (tests/toys.py's Faulty objective: a fault on one process)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from forked import Forked

from multissl import checkpoint

WORKER = Path(__file__).with_name("fault_worker.py")
pytestmark = pytest.mark.distributed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cwd: Path, rank: int, world: int, port: int, *args, cache: Path, torchrun: bool = False):
    """One process of a run started by hand (RANK/WORLD_SIZE: no launcher that would end the others when one fails;
    forked from a server that imported the engine once, tests/forked.py), or one "node" of torchrun --nnodes 2
    --nproc_per_node 1."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MULTISSL_CACHE": str(cache)}
    cwd.mkdir(parents=True, exist_ok=True)
    if not torchrun:
        env |= {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        return Forked([WORKER, *args], env, cwd)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(world), "--nproc_per_node", "1",
           "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port), str(WORKER), *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def launch(cwds, *args, cache, torchrun=False, timeout=240):
    """Every process of one run; returns [(exit status, stderr, seconds)] in rank order."""
    port, tic = free_port(), time.monotonic()
    procs = [start(cwd, r, len(cwds), port, *args, cache=cache(r), torchrun=torchrun) for r, cwd in enumerate(cwds)]
    out = []
    for p in procs:
        err = p.communicate(timeout=timeout)[1]
        out.append((p.returncode, err, time.monotonic() - tic))
    return out


def losses(folder: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_sigterm_to_one_process_stops_both_with_a_checkpoint_and_the_relaunch_resumes_exactly(tmp_path):
    cache = lambda r: tmp_path / "cache"  # noqa: E731  one machine: one cache, empty at first
    args = ("domain=text", "encoder.dim=64")  # the bag's narrow width: a smaller all-reduce, the same contract
    stopped = launch([tmp_path] * 2, "run", "sigterm", "1", *args, cache=cache)
    for status, err, seconds in stopped:  # SIGTERM reached process 1 at step 1; both stop after step 2
        assert status == 128 + signal.SIGTERM and seconds < 60, err[-2000:]
    assert "SIGTERM (to another process): checkpoint saved at step 2" in stopped[0][1]
    assert checkpoint.latest(tmp_path / "run" / "checkpoints").name == "step_00000002.pt"
    resumed = launch([tmp_path] * 2, "run", "sigterm", "1", *args, cache=cache)
    assert [s for s, _, _ in resumed] == [0, 0], resumed[0][1][-2000:] + resumed[1][1][-2000:]
    assert "resuming run from step 2" in resumed[0][1]
    straight = launch([tmp_path] * 2, "straight", "sigterm", "-1", *args, cache=cache)
    assert [s for s, _, _ in straight] == [0, 0]
    assert losses(tmp_path / "run") == losses(tmp_path / "straight") and len(losses(tmp_path / "run")) == 6
    # both processes trained with the main process's tokenizer, which the export holds
    export = json.loads((tmp_path / "run" / "encoder" / "config.json").read_text())["preprocess"]
    for r in (0, 1):
        assert json.loads((tmp_path / f"run.rank{r}.json").read_text()) == export


def test_a_user_error_on_one_process_ends_both_at_once_with_its_message_shown_once(tmp_path):
    out = launch([tmp_path] * 2, "run", "error", "1", cache=lambda r: tmp_path / "cache", timeout=120)
    message = "multissl: error: a bad sample on process 1 at step 1"
    assert [s for s, _, _ in out] == [2, 2], out[0][1][-2000:] + out[1][1][-2000:]
    assert all(seconds < 60 for _, _, seconds in out)
    assert message in out[1][1] and message not in out[0][1]
    assert "Traceback" not in out[0][1] + out[1][1]


def test_a_hung_process_ends_the_run_after_trainer_timeout_s(tmp_path):
    out = launch([tmp_path] * 2, "run", "hang", "1", "trainer.timeout_s=5", cache=lambda r: tmp_path / "cache",
                 timeout=120)
    assert [s for s, _, _ in out] == [1, 1] and all(seconds < 60 for _, _, seconds in out), out[0][1][-2000:]
    assert "another process did not answer within trainer.timeout_s=5 s" in out[0][1]
    assert "Traceback" not in out[0][1] + out[1][1] and "multissl: error" not in out[1][1]


def test_two_nodes_with_their_own_caches_and_no_shared_folder_match_one_process_and_resume(tmp_path):
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    cache = lambda r: nodes[r] / "cache"  # noqa: E731
    args = ("runs/t", "sigterm", "1", "domain=text", "encoder.dim=64")  # a relative run.dir: each node's own folder
    stopped = launch(nodes, *args, cache=cache, torchrun=True)
    assert all(s != 0 and seconds < 60 for s, _, seconds in stopped)
    resumed = launch(nodes, *args, cache=cache, torchrun=True)
    assert [s for s, _, _ in resumed] == [0, 0], resumed[0][1][-2000:] + resumed[1][1][-2000:]
    assert "resuming runs/t from step 2" in resumed[0][1]
    assert not (nodes[1] / "runs/t").exists()  # the run folder is the main process's alone
    # node 1 derived nothing (no tokenizer of its own); its cache holds only the corpus read and tokenized once with
    # the main process's tokenizer, for its own processes and loader workers
    cached = {p.name.split("-")[0] for p in (nodes[1] / "cache" / "text").iterdir()}
    assert cached <= {"corpus", "tokens"} and not list((nodes[1] / "cache").rglob("tokenizer-*"))
    export = json.loads((nodes[0] / "runs/t/encoder/config.json").read_text())["preprocess"]
    for r, node in enumerate(nodes):
        assert json.loads((node / f"runs/t.rank{r}.json").read_text()) == export
    # one process on node 0's cache (its tokenizer), never stopped
    one = Forked([WORKER, tmp_path / "one", "sigterm", "-1", *args[3:]],
                 {**os.environ, "OMP_NUM_THREADS": "1", "MULTISSL_CACHE": str(cache(0))}, tmp_path)
    err = one.communicate(timeout=240)[1]
    assert one.returncode == 0, err[-2000:]
    a, b = losses(tmp_path / "one"), losses(nodes[0] / "runs/t")
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(b[:3], a[:3], rtol=1e-5)
    np.testing.assert_allclose(b, a, rtol=1e-4)


def test_two_nodes_joined_by_c10d_rendezvous_match_one_process(tmp_path):
    """torchrun's c10d rendezvous, as a cluster's nodes meet (--rdzv-backend c10d, no node ranks given): the two
    "nodes" share the run folder, as on a shared filesystem, so whichever joined first and became rank 0 writes it."""
    port, env = free_port(), {**os.environ, "OMP_NUM_THREADS": "1", "MULTISSL_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend",
           "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "job", str(WORKER), str(tmp_path / "two"),
           "sigterm", "-1", "trainer.max_steps=3"]
    nodes = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [n.communicate(timeout=240)[1] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    one = Forked([WORKER, tmp_path / "one", "sigterm", "-1", "trainer.max_steps=3"], env, tmp_path)
    err = one.communicate(timeout=240)[1]
    assert one.returncode == 0, err[-2000:]
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 3
    np.testing.assert_allclose(b[:1], a[:1], rtol=1e-5)
    np.testing.assert_allclose(b, a, rtol=1e-4)
