"""Encoder = domain embedder -> torch.nn.TransformerEncoder (pre-norm, SDPA) -> cls/mean pooling; or the
same embedder -> flattened -> MLP (MLPEncoder, for a fixed number of tokens, e.g. table features)."""
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from multissl.data import join
from multissl.errors import UserError
from multissl.heads import mlp


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The one masking helper: x [b n d], idx [b k] -> [b k d]. Index -1 pads a variable-length batch's
    index tensor; its rows hold token 0 and the caller ignores them (`idx < 0`)."""
    return torch.gather(x, 1, idx.clamp_min(0).unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(base: torch.Tensor, idx: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Its inverse: base [b n d] with rows idx [b k] replaced by src [b k d]; -1 entries are dropped (they go to
    a scratch row that is cut off, so they overwrite nothing)."""
    b, n, d = base.shape
    full = torch.cat([base, base.new_zeros(b, 1, d)], 1)  # [b n+1 d]
    idx = torch.where(idx < 0, n, idx)
    return full.scatter(1, idx.unsqueeze(-1).expand(-1, -1, d), src)[:, :n]


def fill_masked(embed: nn.Module, x, t: torch.Tensor, masked: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """t [b n d] = embed(x) with the tokens at masked [b m] (-1 skipped) replaced by the mask token [d] at their
    position: the embedding of an empty (all-zero) input there plus the token. For a patch embedding that is the
    token, the projection's bias and the position (SimMIM's and iBOT's mask token before positions are added); for
    feature tokens, the feature's own identity. Any embedder has it, so no embedder needs a mask-token API."""
    empty = embed(torch.zeros_like(x[:1])).expand_as(t)  # [b n d]
    return scatter_tokens(t, masked, gather_tokens(empty, masked) + token.to(t.dtype))


def kept_padding(pad: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor | None:
    """Padding of the kept tokens [b k]: padded positions of pad [b n], and the -1 entries of keep [b k]."""
    if pad is None:
        return None
    return torch.gather(pad, 1, keep.clamp_min(0)) | (keep < 0)


def masked_mean(t: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    """Mean over tokens of t [b n d], padding [b n] excluded -> [b d]."""
    if pad is None:
        return t.mean(1)
    real = (~pad).unsqueeze(-1).to(t.dtype)
    return (t * real).sum(1) / real.sum(1).clamp_min(1)


class Encoder(nn.Module):
    supports_masking = True
    supports_padding = True
    supports_mask_tokens = True

    def __init__(self, domain, dim: int = 64, depth: int = 3, heads: int = 4, mlp_ratio: float = 2.0,
                 pool: str = "cls", dropout: float = 0.0, checkpointing: bool = False):
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"encoder.pool must be cls or mean, got {pool!r}")
        self.dim, self.pool, self.checkpointing = dim, pool, checkpointing
        self.embed = domain.embedder(dim)  # raw model input -> [b n d] with positions added
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        if self.cls is not None:
            nn.init.trunc_normal_(self.cls, std=0.02)

    def forward(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None,
                masked: torch.Tensor | None = None, mask_token: torch.Tensor | None = None):
        """x: a batch of model input; keep: [b k] indices of visible tokens (None = all; -1 = padding);
        pad: [b n] True where a variable-length sample is padded: no token attends to padding and pooling
        skips it, so a sample's outputs do not depend on what it is batched with; masked [b m] with mask_token [d]:
        those tokens enter as the mask token (`fill_masked`), their content never reaching the blocks.
        Returns (tokens [b k d], pooled [b d])."""
        t, pad = self.block_input(x, keep, pad, masked, mask_token)
        if self.recomputes():
            for block in self.blocks.layers:
                t = self.run_block(block, t, pad)
        else:
            t = self.blocks(t, src_key_padding_mask=pad)
        t = self.norm(t)
        if self.cls is not None:
            return t[:, 1:], t[:, 0]
        return t, masked_mean(t, pad)

    def block_input(self, x, keep, pad, masked=None, mask_token=None):
        """What the first block sees: the kept tokens [b k d] (cls first when pooled by it) and their padding."""
        t = self.embed(x)  # [b n d]
        if masked is not None:
            t = fill_masked(self.embed, x, t, masked, mask_token)
        if keep is not None:
            t, pad = gather_tokens(t, keep), kept_padding(pad, keep)  # [b k d], [b k]
        if self.cls is not None:
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1)
            if pad is not None:
                pad = torch.cat([pad.new_zeros(pad.shape[0], 1), pad], 1)
        return t, pad

    def recomputes(self) -> bool:
        """encoder.checkpointing, where it saves memory: a training forward that keeps activations for backward."""
        return self.checkpointing and self.training and torch.is_grad_enabled()

    def run_block(self, block: nn.Module, t: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        """One transformer block over t [b k d]; with encoder.checkpointing its activations are not kept but
        recomputed in the backward pass (the same dropout: checkpoint restores the random state)."""
        if self.recomputes():
            return checkpoint(block, t, src_key_padding_mask=pad, use_reentrant=False)
        return block(t, src_key_padding_mask=pad)

    def hidden_states(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None) -> list:
        """The output of every transformer block, first to last, each [b k d] (tokens only: no cls), before the
        final norm; the input as in `forward`, so `self.norm` of the last one is forward's tokens. For targets
        read from inside the network (data2vec)."""
        t, pad = self.block_input(x, keep, pad)
        out = []
        for block in self.blocks.layers:  # what self.blocks does, one block at a time
            t = self.run_block(block, t, pad)
            out.append(t[:, 1:] if self.cls is not None else t)
        return out


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

    def forward(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        if keep is not None or pad is not None:
            raise UserError("encoder=mlp has no tokens to mask or pad; use encoder=transformer")
        return None, self.mlp(self.embed(x).flatten(1))  # no tokens, pooled [b dim]


def encode_views(encoder, views: list, pads: list | None = None) -> list[torch.Tensor]:
    """Pooled representations of every view; consecutive views of one shape share a forward pass
    (so BatchNorm-free transformers and the projector see the same batch either way). pads: the batch's
    "pad" (one [b n] mask per view) for a variable-length domain, else None."""
    out, i = [], 0
    while i < len(views):
        j = i
        while j + 1 < len(views) and views[j + 1].shape == views[i].shape:
            j += 1
        x = join(views[i:j + 1])  # views of one batch's apply need no copy
        pooled = encoder(x)[1] if pads is None else encoder(x, pad=torch.cat(pads[i:j + 1]))[1]
        out += list(pooled.chunk(j + 1 - i))
        i = j + 1
    return out


def view_pairs(n_views: int, n_global: int = 2) -> list[tuple[int, int]]:
    """Multi-crop pairing: each global view i against every other view j."""
    return [(i, j) for i in range(min(n_global, n_views)) for j in range(n_views) if j != i]
