"""`python -m multissl.testing FOLDER`, under torchrun: the 2-process side of check_parity. FOLDER holds the config
(config.yaml) and the 1-process side's domain state (state.json); rank 0 writes its parity_step to two.pt."""
import json
import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from omegaconf import OmegaConf

from multissl import dist
from multissl.build import build_domain
from multissl.testing.parity import parity_step



def main(folder: Path):
    torch.set_num_threads(1)
    cfg = OmegaConf.create((folder / "config.yaml").read_text())
    AcceleratorState._reset_state()
    Accelerator(cpu=True)  # joins the process group torchrun describes; build_domain shares the state through it
    result = parity_step(cfg, build_domain(cfg, state=json.loads((folder / "state.json").read_text())))
    if dist.rank() == 0:
        torch.save(result, folder / "two.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: gloo's threads sometimes abort there


if __name__ == "__main__":
    main(Path(sys.argv[1]))
