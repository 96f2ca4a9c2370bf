"""Encoder = domain embedder -> torch.nn.TransformerEncoder (pre-norm, SDPA) -> cls/mean pooling; or the
same embedder -> flattened -> MLP (MLPEncoder, for a fixed number of tokens, e.g. table features)."""
import torch
from torch import nn

from multissl.errors import UserError
from multissl.heads import mlp


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The one masking helper: x [b n d], idx [b k] -> [b k d]."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Encoder(nn.Module):
    supports_masking = True

    def __init__(self, domain, dim: int = 64, depth: int = 3, heads: int = 4, mlp_ratio: float = 2.0,
                 pool: str = "cls", dropout: float = 0.0):
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"encoder.pool must be cls or mean, got {pool!r}")
        self.dim, self.pool = dim, pool
        self.embed = domain.embedder(dim)  # raw model input -> [b n d] with positions added
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        if self.cls is not None:
            nn.init.trunc_normal_(self.cls, std=0.02)

    def forward(self, x, keep: torch.Tensor | None = None):
        """x: a batch of model input; keep: [b k] indices of visible tokens (None = all).
        Returns (tokens [b k d], pooled [b d])."""
        t = self.embed(x)  # [b n d]
        if keep is not None:
            t = gather_tokens(t, keep)  # [b k d]
        if self.cls is not None:
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1)
        t = self.norm(self.blocks(t))
        if self.cls is not None:
            return t[:, 1:], t[:, 0]
        return t, t.mean(1)


class MLPEncoder(nn.Module):
    """domain.embedder(token_dim) -> [b n token_dim] -> flattened [b n*token_dim] -> Linear-BN-ReLU hidden
    layers -> Linear -> [b dim]. The usual strong baseline for tables; it has no token output, so masked
    objectives refuse it."""
    supports_masking = False

    def __init__(self, domain, dim: int = 64, hidden=(256, 256), token_dim: int = 8):
        super().__init__()
        self.dim = dim
        self.embed = domain.embedder(token_dim)
        self.mlp = mlp([domain.num_tokens * token_dim, *hidden, dim])

    def forward(self, x, keep: torch.Tensor | None = None):
        if keep is not None:
            raise UserError("encoder=mlp has no tokens to mask; use encoder=transformer with masked objectives")
        return None, self.mlp(self.embed(x).flatten(1))  # no tokens, pooled [b dim]


def encode_views(encoder, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """Pooled representations of every view; consecutive views of one shape share a forward pass
    (so BatchNorm-free transformers and the projector see the same batch either way)."""
    out, i = [], 0
    while i < len(views):
        j = i
        while j + 1 < len(views) and views[j + 1].shape == views[i].shape:
            j += 1
        pooled = encoder(torch.cat(views[i:j + 1]))[1]
        out += list(pooled.chunk(j + 1 - i))
        i = j + 1
    return out


def view_pairs(n_views: int, n_global: int = 2) -> list[tuple[int, int]]:
    """Multi-crop pairing: each global view i against every other view j."""
    return [(i, j) for i in range(min(n_global, n_views)) for j in range(n_views) if j != i]
