"""trainer.strategy: how several processes share a step. Every process computes its own loss on its part of the global
batch; the engine differentiates the mean of those losses (multissl.dist.gather), which each strategy reaches its own
way:

- `ddp`: the model replicated, its gradients averaged in buckets by torch's DistributedDataParallel while the
  backward pass still runs;
- `fsdp`: FSDP2 (`fully_shard`): parameters, gradients and AdamW's state sharded over the processes; each transformer
  block, the encoder and every teacher copy of it is a unit gathered for its own forward and backward, and an EMA
  teacher is sharded like its student, so its update is a local one;
- `average`: the model replicated, every gradient averaged after the backward pass (multissl.dist.average_gradients).

Checkpoints and exports are gathered whatever the strategy: the same files as one process writes, so a run saved with
N processes resumes with any M and any strategy."""
import contextlib
import sys

import torch
from torch import nn

from multissl import dist

MARKS = ("lr_scale", "lr_scale_warmup")  # what multissl.optim reads on a Parameter
FORWARD_METHODS = ("hidden_states",)  # the encoder contract's other methods that run the network


def wrap(model: nn.Module, name: str) -> nn.Module:
    """The module each step calls for (loss, outputs). `model` itself keeps its parameters' names and objects
    (ddp), or holds the shards as its parameters (fsdp). One process: `model` as it is."""
    if dist.world_size() == 1:
        return model
    if name == "ddp":
        from torch.nn.parallel import DistributedDataParallel
        # find_unused_parameters: teachers' and frozen parameters (DINO's last layer, SwAV's prototypes) get no
        # gradient on some steps; buffers are kept identical by the objectives themselves (gathered statistics)
        return DistributedDataParallel(model, find_unused_parameters=True, broadcast_buffers=False)
    if name == "fsdp":
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
        marks = {n: {a: getattr(p, a) for a in MARKS if hasattr(p, a)} for n, p in model.named_parameters()}
        empty = {p for p in model.parameters() if p.numel() == 0}  # nothing to shard (a table without categories)
        for unit in units(model):
            fully_shard(unit, ignored_params=empty)
            for method in FORWARD_METHODS:  # gathered when called instead of forward (data2vec's teacher)
                if callable(getattr(unit, method, None)):
                    register_fsdp_forward_method(unit, method)
        fully_shard(model, ignored_params=empty)
        for n, p in model.named_parameters():  # the shards are new Parameters: the optimizer reads these marks
            for a, v in marks.get(n, {}).items():
                setattr(p, a, v)
    return model


def is_sharded(x) -> bool:
    """Whether x is a DTensor (a shard). torch.distributed.tensor is imported by fsdp alone, as it takes a good part
    of a process's start: where it was never imported, nothing is one."""
    tensor = sys.modules.get("torch.distributed.tensor")
    return tensor is not None and isinstance(x, tensor.DTensor)


def sharded(model: nn.Module) -> bool:
    """Whether `model` holds shards (fsdp on several processes) rather than whole parameters."""
    return any(is_sharded(p) for p in model.parameters())


def units(model: nn.Module) -> list[nn.Module]:
    """FSDP's units, innermost first: every block (each entry of a ModuleList) of the encoder and of every copy of it
    (EMA teachers), then those encoders, so each is gathered only while it computes — and an encoder called on its own
    (evaluation, export) gathers itself."""
    encoders = [m for m in model.modules() if type(m) is type(model.encoder)]
    blocks = [b for e in encoders for m in e.modules() if isinstance(m, nn.ModuleList) for b in m]
    return [*blocks, *encoders]


def sync(runner: nn.Module, model: nn.Module, last: bool):
    """Around a micro-batch's forward and backward: gradients are exchanged only on a step's last micro-batch."""
    if last or dist.world_size() == 1:
        return contextlib.nullcontext()
    if hasattr(runner, "no_sync"):  # ddp
        return runner.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # fsdp
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


@contextlib.contextmanager
def whole(model: nn.Module):
    """Within it, the parameters the root of an fsdp model holds itself (the objective's heads) are gathered, so
    evaluation can call a head on its own; the encoders gather themselves when called."""
    gather = sharded(model)
    if gather:
        model.unshard()
    try:
        yield
    finally:
        if gather:
            model.reshard()


def after_backward(model: nn.Module, name: str):
    """What a strategy still has to do once the step's backward passes are over."""
    if name == "average":
        dist.average_gradients(model)


def full(x):
    """x with every sharded tensor gathered whole (on every process: a collective), in nested dicts and lists; other
    values as they are."""
    if is_sharded(x):
        return x.full_tensor()
    if isinstance(x, dict):
        return {k: full(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(full(v) for v in x)
    return x


def _like(value, template):
    """A whole tensor placed as `template` is (a local slice of this process when the template is sharded)."""
    if is_sharded(template) and torch.is_tensor(value) and not is_sharded(value):
        from torch.distributed.tensor import distribute_tensor
        return distribute_tensor(value.to(template.dtype), template.device_mesh, template.placements,
                                 src_data_rank=None)  # every process holds the whole tensor: no communication
    return value


def place(saved: dict | None, model: nn.Module, optimizer) -> dict | None:
    """A gathered checkpoint (checkpoint.latest_state, identical on every process) with the model's and the
    optimizer's tensors placed as this process holds them, for checkpoint.resume."""
    if saved is None or not sharded(model):
        return saved
    current = model.state_dict()
    weights = {k: _like(v, current.get(k)) for k, v in saved["model"].items()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for i, s in saved["optimizer"]["state"].items():
        p = params[i] if isinstance(i, int) and i < len(params) else None
        state[i] = {k: _like(v, p) if k != "step" and torch.is_tensor(v) and p is not None and v.shape == p.shape else v
                    for k, v in s.items()}
    return saved | {"model": weights, "optimizer": saved["optimizer"] | {"state": state}}


def grad_norm(norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_'s result as a plain tensor (under fsdp it is a replicated DTensor)."""
    return norm.full_tensor() if is_sharded(norm) else norm
