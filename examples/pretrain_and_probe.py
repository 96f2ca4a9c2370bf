"""Pretrain an encoder on the bundled digits, export it, and use its embeddings downstream.

    python examples/pretrain_and_probe.py                      # simclr, 300 steps
    python examples/pretrain_and_probe.py objective=byol trainer.max_steps=500
"""
import sys

import torch
from sklearn.linear_model import LogisticRegression

import multissl
from multissl.cli import load_config
from multissl.train import run

overrides = sys.argv[1:] or ["objective=simclr", "trainer.max_steps=300"]
folder = run(load_config(["domain=image", "run.dir=runs/example", *overrides]))

encoder = multissl.load_encoder(folder)  # weights + the domain's preprocessing, no pickles
train, test = encoder.domain.dataset("train"), encoder.domain.dataset("test")


def features(ds):
    raw = torch.stack([ds[i]["x"] for i in range(len(ds))])  # uint8 [n 1 8 8], as stored
    return encoder.embed(raw).numpy(), raw.flatten(1).float().numpy(), [ds[i]["y"] for i in range(len(ds))]


(e_tr, p_tr, y_tr), (e_te, p_te, y_te) = features(train), features(test)
for name, a, b in [("ssl embeddings", e_tr, e_te), ("raw pixels", p_tr, p_te)]:
    acc = LogisticRegression(max_iter=2000).fit(a, y_tr).score(b, y_te)
    print(f"logistic regression on {name}: {acc:.3f}")
