"""Contract examples written for the tests, not shipped: a variable-length domain and an objective with a
queue. They use only what docs/contracts.md describes, so they also show that the
contracts carry sequences and objective state. Importable as `toys` (tests/conftest.py puts tests/ on the
path; subprocess workers do the same), so a config can name them: `_target_: toys.QueueContrast`."""
import os
import signal
import threading

import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import all_gather, gather, local_slice, rank
from multissl.errors import UserError
from multissl.domains.masking import random_mask
from multissl.domains.patches import PatchEmbed, masked_mse
from multissl.encoder import encode_views
from multissl.heads import mlp


class Sequences(torch.utils.data.Dataset):
    def __init__(self, xs: list[torch.Tensor], ys: list[int]):
        self.xs, self.ys = xs, ys

    def __len__(self):
        return len(self.xs)

    def __getitem__(self, i):
        return {"x": self.xs[i], "y": self.ys[i]}


def toy_sequences(n: int, min_len: int, max_len: int, features: int, seed: int):
    """n sequences [L_i features], L_i in [min_len, max_len]; label = which of 3 frequencies the sine has."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (), generator=g))
        y = int(torch.randint(0, 3, (), generator=g))
        t = torch.arange(length, dtype=torch.float32)[:, None]
        phase = torch.rand(1, features, generator=g) * 6.28
        xs.append(torch.sin(t * (0.3 + 0.4 * y) + phase) + 0.1 * torch.randn(length, features, generator=g))
        ys.append(y)
    return Sequences(xs, ys)


class ToySequences:
    """Samples are float sequences [L features] of different lengths; one token per step through the 1-D
    patch embedding with learned positions cropped to the length. Views: a random crop of 70-100 % of the
    steps plus noise, so the views of one sample differ in length too."""
    name = "toyseq"

    def __init__(self, n: int = 96, min_len: int = 4, max_len: int = 12, features: int = 3, mask_ratio: float = 0.5,
                 noise: float = 0.05, data=None, state: dict | None = None):
        self.n, self.min_len, self.max_len, self.features = n, min_len, max_len, features
        self.mask_ratio, self.noise, self.data = mask_ratio, noise, data or {}
        self.num_classes, self._splits = 3, None

    def dataset(self, split):
        if self._splits is None:
            self._splits = {"train": toy_sequences(self.n, self.min_len, self.max_len, self.features, 0),
                            "test": toy_sequences(self.n // 2, self.min_len, self.max_len, self.features, 1)}
        return self._splits.get(split)

    def views(self, x, rng, n_global=2):
        out = []
        for _ in range(n_global):
            keep = max(self.min_len // 2, int(len(x) * (0.7 + 0.3 * float(torch.rand((), generator=rng)))))
            start = int(torch.randint(0, len(x) - keep + 1, (), generator=rng))
            out.append(x[start:start + keep] + self.noise * torch.randn(keep, self.features, generator=rng))
        return out

    def collate(self, inputs):
        """[L_i f] each -> x [b n f] (zeros after the end), pad [b n] True there."""
        n = max(len(v) for v in inputs)
        x = torch.zeros(len(inputs), n, self.features)
        pad = torch.ones(len(inputs), n, dtype=torch.bool)
        for i, v in enumerate(inputs):
            x[i, :len(v)], pad[i, :len(v)] = v, False
        return x, pad

    @property
    def num_tokens(self):
        return self.max_len

    @property
    def target_dim(self):
        return self.features

    def embedder(self, dim):
        return SeqEmbed(self.features, self.max_len, dim)

    def mask(self, batch_size, rng, n_tokens):
        return random_mask(batch_size, n_tokens, self.mask_ratio, rng)

    def target(self, x):
        return x  # [b n f]: one token per step

    def reconstruction_loss(self, pred, target, masked):
        return masked_mse(pred, target, masked)

    def eval_input(self, x):
        return x

    def preprocess(self, raw):
        """A list of sequences (lists or arrays [L f]) -> (x, pad)."""
        return self.collate([torch.as_tensor(v, dtype=torch.float32) for v in raw])

    def state(self):
        return {}


class SeqEmbed(nn.Module):
    def __init__(self, features: int, max_len: int, dim: int):
        super().__init__()
        self.patch = PatchEmbed(features, (max_len,), (1,), dim, "learned", fit="crop")

    def forward(self, x):  # [b n f] -> [b n d]
        return self.patch(x.transpose(1, 2))


class QueueContrast(nn.Module):
    """InfoNCE of view 1 against view 0 with negatives from the batch and from a queue of earlier steps' view-0
    projections (MoCo-style, no momentum encoder). The queue is filled in after_step from the gathered batch,
    so every process holds the same one; `queue_y` keeps the labels of what was enqueued and `updates` counts
    the applied steps. forward never changes state: it only stashes its projections by step."""
    global_views = 2
    batch_statistics = True

    def __init__(self, encoder, domain, size: int = 48, dim: int = 16, temperature: float = 0.2):
        super().__init__()
        self.projector = mlp([encoder.dim, 32, dim])
        self.temperature = temperature
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("queue_y", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.pending = []  # (step, projections [b d], labels [b]) of this process, until after_step

    def forward(self, encoder, batch, sched):
        reps = encode_views(encoder, batch["views"], batch.get("pad"))
        q, k = (F.normalize(self.projector(r), dim=1) for r in reps[:2])
        keys = F.normalize(gather(k), dim=1)  # [B d], every process's keys in rank order
        logits = torch.cat([q @ keys.T, q @ self.queue.T], 1) / self.temperature  # [b B+Q]
        target = torch.arange(q.shape[0], device=q.device) + local_slice(keys.shape[0]).start  # own keys
        loss = F.cross_entropy(logits, target)
        self.pending.append((sched["step"], q.detach(), batch["y"]))
        return loss, {"rep": reps[0].detach(), "queue_fill": (self.queue_y >= 0).float().mean()}

    @torch.no_grad()
    def after_step(self, encoder, sched):
        mine = [(z, y) for s, z, y in self.pending if s == sched["step"]]  # a skipped step's stash is dropped
        self.pending.clear()
        z = all_gather(torch.cat([z for z, _ in mine]))  # the whole step, every process
        y = all_gather(torch.cat([y for _, y in mine]))
        idx = (self.ptr + torch.arange(len(z), device=z.device)) % len(self.queue)
        self.queue[idx], self.queue_y[idx] = z, y
        self.ptr.copy_((self.ptr + len(z)) % len(self.queue))
        self.updates += 1


class Faulty(QueueContrast):
    """QueueContrast with a fault on one process at one step: `fault="sigterm"` signals that process (a scheduler
    preempting one node), `fault="error"` raises a UserError there (a bad sample on one process), `fault="hang"`
    blocks it (a process stuck on a dead filesystem). rank=-1: none."""

    def __init__(self, encoder, domain, at: int = 1, rank: int = 1, fault: str = "sigterm", **kwargs):
        super().__init__(encoder, domain, **kwargs)
        self.at, self.on, self.fault = at, rank, fault

    def forward(self, encoder, batch, sched):
        if sched["step"] == self.at and rank() == self.on:
            if self.fault == "error":
                raise UserError(f"a bad sample on process {self.on} at step {self.at}")
            if self.fault == "hang":
                threading.Event().wait()
            os.kill(os.getpid(), signal.SIGTERM)
        return super().forward(encoder, batch, sched)


class Incomplete:
    """A domain that forgot views() and mask(): the engine names what is missing."""
    name = "incomplete"
    num_tokens = target_dim = 1

    def __init__(self, data=None):
        self.data = data

    def dataset(self, split):
        return None

    def embedder(self, dim):
        return nn.Identity()

    def target(self, x):
        return x

    def reconstruction_loss(self, pred, target, masked):
        return pred.sum()

    def eval_input(self, x):
        return x

    def preprocess(self, raw):
        return raw

    def state(self):
        return {}


class PrefersByol(ToySequences):
    """ToySequences whose data names the objective it trains best with (a domain's `default_objective`)."""

    @staticmethod
    def default_objective(data, **keys):
        return "byol", "its sequences say so"


class PrefersSpr(ToySequences):
    """Names an objective it cannot train (SPR needs episodes): the config's default stays."""

    @staticmethod
    def default_objective(data, **keys):
        return "spr"
