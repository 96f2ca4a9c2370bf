"""`python run_queue.py key=value …`: `python -m multissl.train` with tests/toys.py's QueueContrast as the objective
(an objective with a queue in buffers, filled in after_step), for the SIGKILL test."""
import sys
from pathlib import Path

from omegaconf import open_dict

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: toys

from multissl.cli import load_config  # noqa: E402
from multissl.train import run  # noqa: E402

cfg = load_config(sys.argv[1:])
with open_dict(cfg):
    cfg.objective = {"_target_": "toys.QueueContrast", "size": 48, "dim": 16, "temperature": 0.2}
    cfg.meta.objective = "queue"
run(cfg)
