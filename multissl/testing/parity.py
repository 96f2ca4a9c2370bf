"""Same numbers on 1 or 2 processes (check (5)): the first step's loss and gradients of 2 processes on halves of the
batch against 1 process on the whole batch, in float64. The 2 processes are a torchrun launch of this package
(`multissl/testing/__main__.py`), so a class is found there by module path as it is here."""
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from omegaconf import OmegaConf

from multissl import strategy
from multissl.build import build_domain, build_models
from multissl.data import make_views, objective_loader
from multissl.registry import resolve
from multissl.testing.checks import pair
from multissl.train import prepare_model

PARITY_TOL = 1e-9  # float64: summation order alone moves a loss or gradient by about 1e-15


def double(x):
    return x.double() if torch.is_tensor(x) and torch.is_floating_point(x) else x


def parity_step(cfg, domain) -> dict:
    """The first step's loss and gradients as the engine computes them on this process's part of the global batch
    (after the gradient exchange of trainer.strategy; sharded gradients gathered whole), in float64: the check is about
    gathering and averaging."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # parameters; the data pipeline's float32 views are cast below
    try:
        AcceleratorState._reset_state()
        acc = Accelerator(cpu=True)
        set_seed(0)
        model = prepare_model(*build_models(cfg, domain), acc)
        loader = objective_loader(domain.dataset("train"), domain, model.objective, 0, cfg.data.batch_size, 0, 1,
                                  acc.process_index, acc.num_processes)
        batch = make_views(domain, next(iter(loader)))
        batch.pop("skipped")
        batch = {k: [double(v) for v in x] if isinstance(x, list) else double(x) for k, x in batch.items()}
        runner = strategy.wrap(model, cfg.trainer.strategy)
        loss, _ = runner(batch, {"ema": 0.99, "lr": 0.0, "wd": 0.0, "step": 0, "total_steps": 1, "progress": 0.0})
        loss.backward()
        strategy.after_backward(model, cfg.trainer.strategy)
        grads = strategy.full({k: p.grad for k, p in model.named_parameters() if p.grad is not None})
        return {"loss": acc.reduce(loss.detach(), "mean").item(), "grads": {k: g.clone() for k, g in grads.items()}}
    finally:
        torch.set_default_dtype(previous)


def import_roots(cfg) -> list[str]:
    """The folders the modules of cfg's classes are imported from here, for processes that do not share this one's
    import machinery (a class in a test file that pytest imported by path)."""
    roots = []
    for group in ("domain", "objective", "encoder"):
        module = sys.modules.get(resolve(cfg[group]._target_).__module__)
        file = getattr(module, "__file__", None)
        if file:
            up = module.__name__.count(".") + (Path(file).name == "__init__.py")
            roots.append(str(Path(file).resolve().parents[up]))
    return roots


def launch_two(cfg, state: dict, folder: Path) -> dict:
    """rank 0's parity_step of 2 processes (torchrun, gloo) that build the domain from `state`."""
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (folder / "state.json").write_text(json.dumps(state))
    path = os.pathsep.join(dict.fromkeys([*sys.path, *import_roots(cfg)]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "multissl.testing", str(folder)], env=env, cwd=folder, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{pair(cfg)}: the first step on 2 processes failed:\n{done.stderr[-3000:]}"
    return torch.load(folder / "two.pt", weights_only=True)


def check_parity(cfg, domain=None, tol: float = PARITY_TOL) -> dict:
    """Same numbers on 1 or 2 processes: the first step's loss and every gradient with 2 processes (torchrun, gloo) on
    halves of the batch equal 1 process on the whole batch, in float64, to `tol`. `domain`: built from cfg (None:
    built here); both sides use its state. Skipped with a warning where torch.distributed has no gloo."""
    where = pair(cfg)
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        warnings.warn(f"{where}: 1 vs 2 process parity not checked: this torch has no gloo backend", stacklevel=2)
        return {"skipped": "no gloo"}
    domain = domain or build_domain(cfg)
    one = parity_step(cfg, domain)
    with tempfile.TemporaryDirectory() as tmp:
        two = launch_two(cfg, domain.state(), Path(tmp))
    assert math.isclose(two["loss"], one["loss"], rel_tol=tol, abs_tol=tol), (
        f"{where}: the first step's loss is {two['loss']!r} on 2 processes and {one['loss']!r} on 1 (batch statistics "
        f"must gather over processes: multissl.dist.gather)")
    assert two["grads"].keys() == one["grads"].keys(), (
        f"{where}: gradients reach other parameters on 2 processes: "
        f"{sorted(two['grads'].keys() ^ one['grads'].keys())}")
    for k, g in one["grads"].items():
        torch.testing.assert_close(two["grads"][k], g, rtol=tol, atol=tol, msg=lambda m: (
            f"{where}: the gradient of {k} differs between 2 processes and 1: {m}"))
    return {"loss": one["loss"], "gradients": len(one["grads"])}
