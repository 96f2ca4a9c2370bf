"""Training throughput on this machine: data pipeline alone, then full steps, per objective.

    python benchmarks/throughput.py [domain=image] [objective=simclr] [data.num_workers=1] …
"""
import sys
import time

import torch

from multissl.cli import load_config
from multissl.contracts import Objective, optional
from multissl.data import train_loader
from multissl.optim import build_optimizer
from multissl.schedules import step_values
from multissl.train import SSLModel, build

STEPS = 20
cfg = load_config(sys.argv[1:])
domain, train_set, _, encoder, objective = build(cfg)
model = SSLModel(encoder, objective)
opt = build_optimizer(cfg.optim.name, [model], 1e-3, 0.05)
b = cfg.data.batch_size


def loader():
    return train_loader(train_set, domain, 0, optional(objective, Objective, "global_views"), b, 0, STEPS, 0, 1,
                        cfg.data.num_workers, corrupt=optional(objective, Objective, "corrupt_view"))


t = time.perf_counter()
for _ in loader():
    pass
data_s = (time.perf_counter() - t) / STEPS
t = time.perf_counter()
for step, batch in enumerate(loader()):
    batch.pop("skipped")
    sched = step_values(step, STEPS, cfg.optim, cfg.ema, 1e-3)
    loss, _ = model(batch, sched)
    loss.backward()
    opt.step()
    opt.zero_grad()
    optional(objective, Objective, "after_step")(encoder, sched)
step_s = (time.perf_counter() - t) / STEPS
print(f"{cfg.meta.domain}/{cfg.meta.objective} batch {b}, {torch.get_num_threads()} threads, "
      f"{cfg.data.num_workers} workers: data {b / data_s:.0f} samples/s ({data_s * 1e3:.0f} ms/step); "
      f"training {b / step_s:.0f} samples/s ({step_s * 1e3:.0f} ms/step)")
