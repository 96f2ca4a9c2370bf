"""A queue of earlier steps' embeddings (MoCo's negatives, NNCLR's support set, SwAV's extra assignments) that is
the same on every process and survives a resume exactly:

- it is made of buffers, so the checkpoint holds it and a skipped (non-finite) step restores it;
- forward only stashes what it will enqueue (`stash`); the objective's `after_step` enqueues the applied step's
  stash (`commit`) from the gathered global batch, in rank order, so 1 and N processes hold the same rows;
- it refuses to be longer than the training set: a queue that holds a sample's own earlier embedding turns its
  positive into a negative (facebookresearch/moco#146)."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import all_gather
from multissl.errors import UserError


def queue_size(size: int | None, train_size: int, key: str = "objective.queue_size", default: int = 65536) -> int:
    """The queue length for a training set of `train_size` samples: `size` when given (an error when it is not
    shorter than the set), else the smaller of `default` and half the set."""
    if size is None:
        if train_size < 2:
            raise UserError(f"{key}: a queue needs a training set of at least 2 samples, got {train_size}")
        return min(default, train_size // 2)
    if size < 1 or size >= train_size:
        raise UserError(f"{key}={size} must be at least 1 and shorter than the training set ({train_size} samples): "
                        f"a longer queue holds each sample's own earlier embeddings as negatives; set {key} below "
                        f"{train_size} (e.g. {max(1, train_size // 2)}) or leave it unset")
    return size


class Queue(nn.Module):
    """FIFO of the last `size` rows [size dim] (and their labels, -1 = unknown), oldest overwritten first. Starts
    with random unit rows (labels -1) so that it can be read from the first step, as MoCo and NNCLR do."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("rows", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # rows written so far (at most size)
        self.pending = []  # (step, rows [b dim], labels [b]) of this process, until commit

    def __len__(self):
        return self.rows.shape[0]

    def stash(self, step: int, rows: torch.Tensor, labels: torch.Tensor | None = None):
        """Keep this process's rows [b dim] of step `step` for `commit` (micro-batches of one step add up)."""
        if labels is None:
            labels = torch.full(rows.shape[:1], -1, dtype=torch.long, device=rows.device)
        self.pending.append((step, rows.detach(), labels.detach()))

    @torch.no_grad()
    def commit(self, step: int):
        """Enqueue the rows stashed for `step` by every process (gathered in rank order); a skipped step's stash
        is dropped. Every process calls it once per applied step."""
        mine = [(r, y) for s, r, y in self.pending if s == step]
        self.pending.clear()
        if not mine:
            return
        # each micro-batch gathered on its own: the global batch in its order, however many processes
        rows = torch.cat([all_gather(r) for r, _ in mine]).to(self.rows.dtype)  # [B dim]
        labels = torch.cat([all_gather(y) for _, y in mine])
        rows, labels = rows[-len(self):], labels[-len(self):]  # a batch longer than the queue keeps its last rows
        idx = (self.ptr + torch.arange(len(rows), device=rows.device)) % len(self)
        self.rows[idx], self.labels[idx] = rows, labels
        self.ptr.copy_((self.ptr + len(rows)) % len(self))
        self.filled.copy_(torch.clamp(self.filled + len(rows), max=len(self)))
