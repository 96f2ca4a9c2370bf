"""Reference points for the rl state probe (`state_r2_*`), to read the SSL figures against:

    python benchmarks/rl_state_references.py [encoder=nature_cnn] [data.path=buffer.npz] [trainer.max_steps=1000]

On the held-out episodes, with the same ridge probe as training's evaluation, it prints the R² of
- previous state: the true state of step t-1 (not the action taken there) -> the state of step t. For CartPole's
  Euler step, frames up to t show no more than that: the last action's push is not in them yet.
- untrained / supervised: the encoder's embeddings at init, and after trainer.max_steps steps of regressing the
  standardized state (MSE, AdamW at the configured lr, batch data.batch_size) — what the architecture can hold.
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

from multissl import monitor
from multissl.cli import load_config
from multissl.domains.probes import state_r2
from multissl.train import build

cfg = load_config(["domain=rl", *sys.argv[1:]])
torch.manual_seed(cfg.trainer.seed)
domain, train_set, test_set, encoder, _ = build(cfg)
tr, te = train_set.index.numpy(), test_set.index.numpy()
state = domain._buf["state"]
names = domain.state_names


def show(label, r2):
    print(f"{label:<22} mean {r2.mean():.3f}  " + "  ".join(f"{n} {v:.3f}" for n, v in zip(names, r2)))


def inputs(index):  # [n c h w]: the stored observations through preprocess, one batched call
    return domain.preprocess(domain._buf["obs"][index])


def probe(label):  # the state probe exactly as training's evaluation runs it
    encoder.eval()
    m = monitor.domain_metrics(encoder, domain, "cpu")
    encoder.train()
    show(label, np.array([m[f"state_r2/{n}"] for n in names]))


prev = lambda idx: state[np.maximum(idx - 1, domain.first[idx])]  # noqa: E731 — the first step keeps its own
show("previous state", state_r2(prev(tr), state[tr], prev(te), state[te], domain.probe_alpha))
probe("untrained")

mean, std = state[tr].mean(0), state[tr].std(0)
target = torch.from_numpy((state - mean) / std).float()  # [N S]
head = torch.nn.Linear(encoder.dim, state.shape[1])
params = [*encoder.parameters(), *head.parameters()]
opt = torch.optim.AdamW(params, lr=cfg.optim.base_lr, weight_decay=cfg.optim.weight_decay)
rng = np.random.default_rng(cfg.trainer.seed)
for step in range(cfg.trainer.max_steps):
    idx = rng.choice(tr, cfg.data.batch_size)
    loss = F.mse_loss(head(encoder(inputs(idx))[1]), target[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
probe(f"supervised, {cfg.trainer.max_steps} steps")
