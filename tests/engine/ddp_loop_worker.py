"""A user's own training loop over multissl.losses (tests/engine/test_losses.py): a small MLP, SGD, float64, a
fixed batch of two views. On 2 gloo processes (this file run as a script is one of them) the MLP is wrapped in
torch's DistributedDataParallel and each process trains on its half of the batch, with gather=True and with
gather=False; the test trains the 1-process references. The losses whose inputs the processes hold unevenly
(SPR's valid steps, masked tokens with padding) are compared by value."""
import contextlib
import os
import sys

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from multissl import losses

WORLD, BATCH, STEPS, LR = 2, 8, 3, 0.05
# contrastive over the batch, batch statistics, this process's queries against every key, per sample; the
# Cookbook's batch statistics: spectral contrast, whitening in sub-batches, SIGReg's sketch, nearest neighbours
LOSSES = {"nt_xent": losses.nt_xent, "vicreg": losses.vicreg, "moco_v3": losses.moco_v3, "byol": losses.byol,
          "scl": losses.scl,
          "wmse": lambda a, b, gather: losses.wmse(a, b, w_eps=0.1, gather=gather),
          "lejepa": lambda a, b, gather: losses.lejepa(torch.stack([a, b], 1), step=0, gather=gather),
          "koleo": lambda a, b, gather: losses.koleo(a, gather=gather)}


def views() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed batch: two noisy views [BATCH 6] of the same rows."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 6, generator=g, dtype=torch.float64)
    return tuple(x + 0.3 * torch.randn(BATCH, 6, generator=g, dtype=torch.float64) for _ in range(2))


def half(rank: int) -> slice:
    n = BATCH // WORLD
    return slice(rank * n, (rank + 1) * n)


def train(name: str, parts: list[slice], gather: bool, wrap=lambda m: m) -> dict:
    """STEPS of SGD on the mean over `parts` (row ranges of the batch) of each part's loss -> the parameters and
    the loss of every step. `wrap` puts the MLP in DDP."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8)).double()
    model, opt = wrap(net), torch.optim.SGD(net.parameters(), lr=LR)
    a, b = views()
    seen = []
    for _ in range(STEPS):
        # one forward per part (both views in it): DDP expects one forward per backward
        loss = sum(LOSSES[name](*model(torch.cat([a[p], b[p]])).chunk(2), gather=gather) for p in parts) / len(parts)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append(loss.item())
    return {"params": {k: v.detach().clone() for k, v in net.state_dict().items()}, "losses": seen}


def uneven(rows: slice, gather: bool) -> dict:
    """spr, masked_regression and cpc of `rows` of fixed inputs whose halves hold unequal counts: 5 and 10 valid
    steps, 3 and 8 masked tokens."""
    g = torch.Generator().manual_seed(1)
    p, z, pred, target = (torch.randn(BATCH, 3, 4, generator=g, dtype=torch.float64) for _ in range(4))
    ahead = torch.randn(BATCH, 3, 2, 4, generator=g, dtype=torch.float64)  # [b T K d]: cpc's predictions
    valid = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 0, 0], [0, 0, 0]] + [[1, 1, 1], [1, 1, 0]] * 2).bool()
    masked = torch.tensor([[0, -1], [1, -1], [2, -1], [-1, -1]] + [[0, 2], [1, 2]] * 2)
    return {"spr": losses.spr(p[rows], z[rows], valid[rows], gather=gather).item(),
            "masked_regression": losses.masked_regression(pred[rows], target[rows], masked[rows], gather=gather).item(),
            "cpc": losses.cpc(ahead[rows], z[rows], valid[rows], gather=gather)[0].item()}


@contextlib.contextmanager
def no_collectives():
    """torch.distributed's collectives raise within (the loss's own calls; DDP's reducer is not affected)."""
    names = ("all_gather", "all_reduce", "broadcast", "all_gather_into_tensor", "reduce_scatter_tensor")
    saved = {n: getattr(torch.distributed, n) for n in names}

    def forbidden(*args, **kwargs):
        raise AssertionError("a collective under gather=False")
    for n in names:
        setattr(torch.distributed, n, forbidden)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.distributed, n, f)


def worker(rank: int, init: str, out: str):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=WORLD)
    results = {}
    for name in LOSSES:
        results[f"{name}/gather"] = train(name, [half(rank)], True, DistributedDataParallel)
        with no_collectives():  # the forward under DDP: the losses' collectives would raise, DDP's run in C++
            results[f"{name}/local"] = train(name, [half(rank)], False, DistributedDataParallel)
    results["uneven"] = uneven(half(rank), True)
    torch.save(results, out)
    torch.distributed.barrier()


if __name__ == "__main__":
    torch.set_num_threads(1)
    worker(int(sys.argv[1]), sys.argv[2], sys.argv[3])
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: gloo's threads sometimes abort there (as tests/engine/dist_worker.py)
