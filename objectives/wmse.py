"""W-MSE (Ermolov et al. 2021, "Whitening for self-supervised representation learning"): each view's embeddings are
whitened by Cholesky in sub-batches, which scatters them over the sphere so that nothing else is needed against
collapse, and the whitened positives are pulled together by the MSE of their unit vectors (2 - 2 cos).

As the official code (github.com/htdt/self-supervised, methods/w_mse.py, methods/whitening.py, cfg.py, model.py):
- per iteration (w_iter) the batch is permuted and cut into sub-batches of w_size; each view's rows of a sub-batch
  are centred and multiplied by L^-1, L the Cholesky factor of their (n - 1)-normalised covariance, shrunk to
  (1 - w_eps) C + w_eps I (w_eps 0 by default);
- the loss is the mean over samples of 2 - 2 cos, averaged over the pairs of views and the iterations;
- the head is Linear-BN-ReLU, Linear to the embedding (1024 hidden, 64 out on CIFAR), the defaults 128 / 1 / 0.
Here the batch is the one gathered from every process and the permutation comes from a generator seeded by the step,
so every process cuts the same sub-batches. The official code needs the batch to be a multiple of w_size; here it
is cut into B // w_size sub-batches as equal as can be, and a batch smaller than w_size is one sub-batch."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.dist import gather
from multissl.encoder import encode_views
from multissl.errors import UserError
from multissl.heads import mlp


def whiten(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """x [n d] -> (x - mean) L^-T [n d], L L^T = (1 - eps) C + eps I, C the unbiased covariance: identity covariance.
    At least float32 whatever the autocast precision; a covariance that is not positive definite (NaN input, fewer
    samples than dimensions) gives NaN rows, a non-finite loss the engine's guard skips."""
    with torch.autocast(x.device.type, enabled=False):
        x = x if x.dtype == torch.float64 else x.float()
        n, d = x.shape
        xc = x - x.mean(dim=0)
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        cov = (1 - eps) * (xc.T @ xc) / (n - 1) + eps * eye  # [d d]
        chol, info = torch.linalg.cholesky_ex(cov)
        chol = torch.where(info > 0, torch.full_like(chol, float("nan")), chol)
        return torch.linalg.solve_triangular(chol, xc.T, upper=False).T


def sub_batches(n: int, w_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A random permutation of range(n) cut into max(1, n // w_size) parts of sizes that differ by at most one."""
    return list(torch.randperm(n, generator=generator).tensor_split(max(1, n // w_size)))


def wmse_loss(*z: torch.Tensor, step: int = 0, w_size: int = 128, w_iter: int = 1, w_eps: float = 0.0) -> torch.Tensor:
    """z: two or more views [b d] of the same samples on each process. Over the global batch: w_iter times, the
    sub-batches of a permutation drawn from a generator seeded by `step`, each view whitened within each; the mean
    over samples of 2 - 2 cos of the whitened rows, averaged over every pair of views and the iterations."""
    z = [gather(v) for v in z]  # [B d] each
    n, d = z[0].shape
    smallest = n // max(1, n // w_size)  # the smallest sub-batch
    if smallest <= d and w_eps == 0:
        raise UserError(f"objective=wmse: whitening {d}-dim embeddings needs sub-batches of more than {d} samples, but "
                        f"a global batch of {n} with objective.w_size={w_size} gives {smallest}; raise "
                        f"data.batch_size (per micro-batch) and objective.w_size above {d}, or narrow the last width "
                        f"of objective.projector")
    generator = torch.Generator().manual_seed(int(step))  # on the CPU: the same draw on every process and device
    pairs = [(i, j) for i in range(len(z)) for j in range(i + 1, len(z))]
    total = 0.0
    for _ in range(w_iter):
        for idx in sub_batches(n, w_size, generator):
            idx = idx.to(z[0].device)
            w = [whiten(v[idx], w_eps) for v in z]  # views x [n_sub d]
            total = total + sum((2 - 2 * F.cosine_similarity(w[i], w[j], dim=1)).sum() for i, j in pairs)
    return total / (n * len(pairs) * w_iter)


class WMSE(nn.Module):
    global_views = 2
    batch_statistics = True  # whitening over sub-batches of the batch
    collapse_hint = "raise objective.w_size or objective.w_iter (a steadier whitening matrix)"

    def __init__(self, encoder, domain, projector=(128, 8), w_size: int = 16, w_iter: int = 1,
                 w_eps: float = 0.0):
        super().__init__()
        if w_eps == 0 and w_size <= projector[-1]:
            raise UserError(f"objective.w_size={w_size} must exceed the embedding width {projector[-1]} (the last of "
                            f"objective.projector) to whiten it; the paper uses twice the width")
        # the output Linear has no bias: whitening centres each sub-batch, so it would get no gradient
        self.projector = mlp([encoder.dim, *projector], last_bias=False)
        self.opts = {"w_size": w_size, "w_iter": w_iter, "w_eps": w_eps}

    def forward(self, encoder, batch, sched):
        reps = encode_views(encoder, batch["views"], batch.get("pad"))  # n_views x [b d]
        z = [self.projector(r) for r in reps]
        loss = wmse_loss(*z, step=sched["step"], **self.opts)
        with torch.no_grad():
            pairs = [(i, j) for i in range(len(z)) for j in range(i + 1, len(z))]
            raw = sum(F.cosine_similarity(z[i].float(), z[j].float(), dim=1).mean() for i, j in pairs) / len(pairs)
        # cos: the whitened positives' agreement the loss raises; raw_cos: the same before whitening
        return loss, {"rep": reps[0].detach(), "cos": 1 - loss.detach() / 2, "raw_cos": raw}
