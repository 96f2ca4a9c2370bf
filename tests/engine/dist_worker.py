"""The distributed tier in one launch: `torchrun --nproc_per_node 2 dist_worker.py OUT` runs every check on 2
processes (gloo) and rank 0 saves what they computed; tests/engine/test_distributed.py calls the same functions
in its own process for the 1-process side. One launch for every pair keeps the tier's cost one process start,
not one per domain x objective."""
import os
import sys
from pathlib import Path

import torch
from omegaconf import open_dict

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: toys, tiny

from tiny import TINY_ENCODER, domain_data  # noqa: E402

from multissl import dist  # noqa: E402
from multissl.cli import load_config, options, pairs  # noqa: E402
from multissl.testing.parity import parity_step  # noqa: E402
from multissl.train import build_domain, run  # noqa: E402

DOMAINS, OBJECTIVES = options("domain"), options("objective")
PAIRS = pairs()
# options that change a loss without a config of their own (Garrido et al.'s SimCLR variants), in every domain too
VARIANTS = {"simclr-abs": ("objective=simclr", "objective.negatives=abs"),
            "simclr-square": ("objective=simclr", "objective.negatives=square"),
            "simclr-dims": ("objective=simclr", "objective.normalize=dimensions"),
            "rdm_simsiam-poly": ("objective=rdm_simsiam", "objective.online=poly", "objective.target_power=null")}
PARITY = {f"{d}-{o}": (d, f"objective={o}") for d, o in PAIRS} | {
    f"{d}-{v}": (d, *args) for d in DOMAINS for v, args in VARIANTS.items()}
# end-to-end runs: every objective at its default recipe (default encoder) on images, as the issue measured
# BYOL, and every other domain once (tiny encoder), the objectives taken in turn
RUN = ("trainer.max_steps=3", "trainer.log_every=1", "trainer.eval_every=0", "trainer.eval_samples=200")
E2E = {f"image-{o}": ("domain=image", f"objective={o}", "trainer.seed=5", "data.batch_size=64", *RUN)
       for o in OBJECTIVES if ("image", o) in PAIRS}
E2E |= {f"{d}-{OBJECTIVES[i % len(OBJECTIVES)]}": (f"domain={d}", f"objective={OBJECTIVES[i % len(OBJECTIVES)]}",
                                                  *TINY_ENCODER, "data.batch_size=32", *domain_data([f"domain={d}"]), *RUN)
        for i, d in enumerate(x for x in DOMAINS if x != "image")}
E2E |= {f"{d}-{o}": (f"domain={d}", f"objective={o}", *TINY_ENCODER, "data.batch_size=32", *domain_data([f"domain={d}"]),
                     *RUN)  # an objective that images cannot train (SPR: episodes), on its first domain
        for d, o in dict((o, (d, o)) for d, o in reversed(PAIRS)).values() if ("image", o) not in PAIRS}
# images read by index from shards (tests/tiny.write_image_shards, in the launch's folder: {shards})
E2E["image-shards"] = ("domain=image", "objective=simclr", *TINY_ENCODER, "data.batch_size=16", "data.path={shards}", *RUN)
QUEUE = {"_target_": "toys.QueueContrast", "size": 48, "dim": 16, "temperature": 0.2}


def parity() -> dict:
    """First-step loss and gradients of every domain x objective as the engine computes them, in float64 (the
    check is about gathering and averaging; float32 summation order alone moved a SimCLR gradient by 2e-5):
    multissl.testing's parity step, the one plugin authors run."""
    results, domains = {}, {}
    for name, (d, *args) in PARITY.items():
        cfg = load_config([*TINY_ENCODER, "data.batch_size=32", f"domain={d}", *args, *domain_data([f"domain={d}"])])
        if d not in domains:
            domains[d] = build_domain(cfg)
        results[name] = parity_step(cfg, domains[d])
    return results


def end_to_end(out: Path):
    """The whole engine (data split, gathers, gradient average, after_step, logging, export) for 3 steps of each
    E2E config, into out/<name>."""
    for name, args in E2E.items():
        args = [a.format(shards=out.parent / "shards") for a in args]
        run(load_config([*args, f"run.dir={out / name}"]))


def queue(out: Path):
    """An objective whose queue is filled in after_step from the gathered batch: out/queue."""
    cfg = load_config([*TINY_ENCODER, "data.batch_size=32", "trainer.max_steps=3", "trainer.eval_every=0",
                       "trainer.eval_samples=64", f"run.dir={out / 'queue'}"])
    with open_dict(cfg):
        cfg.objective = dict(QUEUE)
        cfg.meta.objective = "queue"
    run(cfg)


def collectives() -> dict:
    """all_gather and all_reduce of a tensor that differs per process."""
    x = torch.arange(6.0).view(3, 2) + 10 * dist.rank()
    return {"gather": dist.all_gather(x), "sum": dist.all_reduce(x), "mean": dist.all_reduce(x, "mean"), "x": x}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        results = {"parity": parity()}
        end_to_end(out / "two")
        queue(out / "two")
        results["collectives"] = collectives()
    if dist.rank() == 0:
        torch.save(results, out / "two.pt")
    if dist.is_dist():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: gloo's threads sometimes abort there ("terminate called …")
