"""Process-group helpers. Every loss that uses batch statistics calls `gather` (differentiable) so that 2
processes with half the batch each compute exactly what 1 process computes on the whole batch; a mean over a
varying number of items (tokens of variable-length samples) is a `global_mean`; state that must be identical on
every process (queues, centres) is filled through `all_gather` / `all_reduce`."""
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

BUCKET_BYTES = 25 * 2**20  # `average_gradients`: at most this many bytes per all-reduce (a larger gradient alone)


_ONE_PROCESS = ContextVar("multissl_one_process", default=False)


@contextmanager
def one_process():
    """Within it, every helper here acts as one process even inside an initialized process group: `gather` and
    `all_gather` return this process's rows, `all_reduce` its own value, `global_mean` its own mean, with no
    collective at all (multissl.losses' gather=False)."""
    token = _ONE_PROCESS.set(True)
    try:
        yield
    finally:
        _ONE_PROCESS.reset(token)


def is_dist() -> bool:
    return not _ONE_PROCESS.get() and dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


class _Gather(torch.autograd.Function):
    """all_gather whose backward returns to each process the gradient of its own slice, summed over
    the losses of all processes (see `gather`)."""

    @staticmethod
    def forward(ctx, x):
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n:(dist.get_rank() + 1) * n]


def gather(x: torch.Tensor) -> torch.Tensor:
    """[b, ...] on each process -> [b * world, ...] in rank order, differentiable.

    The engine differentiates the mean over processes of each process's loss: the backward sums
    every process's contribution to a row's gradient, and the gradient exchange (DDP's, FSDP's or
    `average_gradients`, multissl.strategy) divides by the number of processes — identical to a single
    process on the whole batch.
    """
    if not is_dist() or dist.get_world_size() == 1:
        return x
    return _Gather.apply(x)


@torch.no_grad()
def all_gather(x: torch.Tensor) -> torch.Tensor:
    """[b, ...] on each process -> [b * world, ...] in rank order, without gradient: for state that every
    process must hold identically (queues, support sets), filled from the global batch. Same b everywhere."""
    if not is_dist() or dist.get_world_size() == 1:
        return x.detach()
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.detach().contiguous())
    return torch.cat(out)


@torch.no_grad()
def all_reduce(x: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """The sum or mean over processes of x (a new tensor; x is unchanged), without gradient: batch counts,
    centres (DINO), Sinkhorn's marginals (SwAV)."""
    if op not in ("sum", "mean"):
        raise ValueError(f"all_reduce op must be sum or mean, got {op!r}")
    out = x.detach().clone()
    if is_dist() and dist.get_world_size() > 1:
        dist.all_reduce(out)
        if op == "mean":
            out /= dist.get_world_size()
    return out


def global_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The mean over every process's items of a per-item loss: this process's sum `total` (with gradient) divided by
    the item count summed over processes, times the number of processes. The engine averages the processes' losses
    and gradients, so this is the mean over the whole step's items however they are split — which a per-process
    mean is not when processes hold different counts (variable-length samples, missing cells). One process:
    total / count (0 when count is 0)."""
    return total * world_size() / all_reduce(count.to(total.dtype)).clamp_min(1)


def local_slice(n_global: int) -> slice:
    """Rows of a gathered [n_global, ...] tensor that belong to this process."""
    n = n_global // world_size()
    return slice(rank() * n, (rank() + 1) * n)


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose statistics cover the batch of every process, on any device (torch's
    SyncBatchNorm needs CUDA). The batch is gathered with gradient and normalized as one process would."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x):
        if not (self.training and world_size() > 1):
            return super().forward(x)
        full = gather(x)  # [b * world, c, ...]
        return super().forward(full)[local_slice(full.shape[0])]


def sync_batchnorm(module: torch.nn.Module, device=None) -> torch.nn.Module:
    """Every BatchNorm{1,2,3}d -> a BatchNorm whose statistics cover every process's batch: torch's
    SyncBatchNorm (exchanges only the statistics) when the model will live on `device` of type cuda, else
    GlobalBatchNorm (gathers the batch, any device: gloo on CPU). Both keep the module's own Parameters and
    buffers, not copies: what the optimizer reads on them (BYOL's predictor lr_scale) and requires_grad (EMA
    teachers) stay. Call it before moving the model to `device`."""
    cls = torch.nn.SyncBatchNorm if device is not None and torch.device(device).type == "cuda" else GlobalBatchNorm
    out = module
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
        out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            setattr(out, name, getattr(module, name))  # the same objects (or None)
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, sync_batchnorm(child, device))
    return out


def broadcast_parameters(module: torch.nn.Module):
    """Rank 0's parameters and buffers everywhere, so every process starts identical."""
    if world_size() > 1:
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, 0)


def _buckets(grads: list[torch.Tensor], limit: int):
    """The gradients grouped by (device, dtype), each group cut in order into runs of at most `limit` bytes
    (a larger gradient alone): the same buckets on every process, whose parameters come in the same order."""
    groups = {}
    for g in grads:
        groups.setdefault((g.device, g.dtype), []).append(g)
    for group in groups.values():
        bucket, size = [], 0
        for g in group:
            if bucket and size + g.numel() * g.element_size() > limit:
                yield bucket
                bucket, size = [], 0
            bucket.append(g)
            size += g.numel() * g.element_size()
        yield bucket


@torch.no_grad()
def average_gradients(module: torch.nn.Module, bucket_bytes: int | None = None):
    """Mean of every gradient over processes, after backward, in place: one all-reduce per flat bucket of
    at most `bucket_bytes` (BUCKET_BYTES) rather than one per parameter (on 2 processes bitwise the same
    values: each element is the same sum of two; on more, the reduction may add in another order). It is
    trainer.strategy=average; the default, ddp, overlaps the same all-reduce with the backward pass (multissl.strategy),
    which composes with the all-reduce inside `gather`'s backward: every process runs the same backward, so the
    collectives come in the same order everywhere. (BYOL's gradients once came out wrong under DDP for another reason:
    BatchNorm conversion gave the EMA teacher fresh Parameters that required grad and never got one, and DDP without
    find_unused_parameters leaves a bucket that waits for such a parameter, and every bucket after it, unreduced —
    silently on the first step.) Gradients that are None stay None."""
    if world_size() > 1:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        for bucket in _buckets(grads, bucket_bytes or BUCKET_BYTES):
            flat = _flatten_dense_tensors(bucket)
            dist.all_reduce(flat)
            flat.div_(world_size())
            for g, mean in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                g.copy_(mean)
