"""`python fault_worker.py <run dir> <fault> <rank> [key=value …]`, one per process (torchrun, or started by hand with
RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT): a tiny run whose objective is tests/toys.py's Faulty (a SIGTERM or a
UserError on process <rank> at step 1; rank -1: none), through the engine's command-line entry
(`multissl.train.execute`: exit status and one-line errors as `python -m multissl.train` has them). Each process
writes the domain state it trained with to <run dir>.rank<r>.json (its own cwd's, so two "nodes" keep theirs)."""
import json
import os
import sys
from pathlib import Path

from omegaconf import open_dict

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: toys, tiny

from tiny import TINY, TINY_ENCODER  # noqa: E402

from multissl import build, dist  # noqa: E402
from multissl.cli import load_config  # noqa: E402
from multissl.train import execute  # noqa: E402


def recording(real):
    def build_domain(cfg, state=None, data=None):
        domain = real(cfg, state, data)
        record = Path(f"{folder}.rank{dist.rank()}.json")
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(domain.state()))
        return domain
    return build_domain


if __name__ == "__main__":
    folder, fault, rank, *overrides = sys.argv[1:]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg = load_config([*TINY_ENCODER, *TINY, "data.batch_size=16", "trainer.max_steps=6", f"run.dir={folder}",
                       *overrides])
    with open_dict(cfg):
        cfg.objective = {"_target_": "toys.Faulty", "fault": fault, "rank": int(rank), "at": 1, "size": 48, "dim": 16}
        cfg.meta.objective = "faulty"
    import multissl.train
    multissl.train.build_domain = recording(build.build_domain)
    sys.exit(execute(cfg))
