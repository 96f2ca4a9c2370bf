"""Run by tests/engine/test_parity.py on 1 process and under torchrun on 2: the first step's loss and
gradients of every domain x objective pair, as the engine computes them, saved by rank 0.

In float64: the test is about the math of gathering and averaging, and in float32 the different summation
order of 2 processes alone moved a SimCLR gradient by 2e-5 (cancellation in the NT-Xent backward)."""
import os
import sys

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed

from multissl import dist
from multissl.cli import load_config, options
from multissl.contracts import Objective, optional
from multissl.data import train_loader
from multissl.train import build, prepare_model

out_path = sys.argv[1]
torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)  # parameters; the data pipeline's float32 inputs are cast below


def double(x):
    return x.double() if torch.is_floating_point(x) else x


results = {}
for domain_name, name in [(d, o) for d in options("domain") for o in options("objective")]:
    cfg = load_config(["encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "data.batch_size=32",
                       f"domain={domain_name}", f"objective={name}", "trainer.seed=0"])
    AcceleratorState._reset_state()
    acc = Accelerator(cpu=True)
    set_seed(0)
    domain, train_set, _, encoder, objective = build(cfg)
    model = prepare_model(encoder, objective, acc)
    batch = next(iter(train_loader(train_set, domain, 0, objective.global_views, 32, 0, 1, acc.process_index,
                                   acc.num_processes, corrupt=optional(objective, Objective, "corrupt_view"))))
    batch.pop("skipped")
    batch = {k: [double(v) for v in x] if isinstance(x, list) else double(x) for k, x in batch.items()}
    loss, _ = model(batch, {"ema": 0.99, "lr": 0.0, "wd": 0.0, "step": 0, "total_steps": 1, "progress": 0.0})
    loss.backward()
    dist.average_gradients(model)
    results[f"{domain_name}-{name}"] = {"loss": acc.reduce(loss.detach(), "mean").item(),
                     "grads": {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}}
if dist.rank() == 0:
    torch.save(results, out_path)
if dist.is_dist():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
sys.stdout.flush()
os._exit(0)  # skip interpreter teardown: gloo's threads sometimes abort there ("terminate called …")
