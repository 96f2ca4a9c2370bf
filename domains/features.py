"""Feature tokens: one token per column of an encoded row (the tabular domain's rows, the rl domain's state
vectors).

An encoded row holds, per feature: numeric = a float, NaN for missing; categorical = the category id as a
float, UNKNOWN (a category never seen in training), MISSING, or FIRST_CATEGORY.. for the vocabulary."""
import torch
from torch import nn

UNKNOWN, MISSING, FIRST_CATEGORY = 0, 1, 2  # categorical ids


class FeatureTokenizer(nn.Module):
    """Encoded rows [b F] -> one token per feature [b F d] (FT-Transformer, Gorishniy et al. 2021):
    numeric j: v W_j + b_j, and M_j + b_j when v is missing; categorical j: E[offset_j + id] + b_j, one
    table with a block of ids per column. W_j, b_j and the blocks are per feature, so tokens carry their
    feature's identity and need no position embedding."""

    def __init__(self, vocab_sizes: list[int], dim: int):
        super().__init__()
        cat = torch.tensor([v > 0 for v in vocab_sizes], dtype=torch.bool)
        num_idx, cat_idx = (~cat).nonzero()[:, 0], cat.nonzero()[:, 0]
        cards = torch.tensor([v + FIRST_CATEGORY for v in vocab_sizes if v > 0], dtype=torch.long)
        self.register_buffer("num_idx", num_idx, persistent=False)
        self.register_buffer("cat_idx", cat_idx, persistent=False)
        self.register_buffer("offsets", torch.cumsum(cards, 0) - cards, persistent=False)
        # tokens are built numeric-first; this puts them back in column order
        self.register_buffer("order", torch.cat([num_idx, cat_idx]).argsort(), persistent=False)
        scale = dim ** -0.5
        self.weight = nn.Parameter(torch.empty(len(num_idx), dim).uniform_(-scale, scale))
        self.missing = nn.Parameter(torch.empty(len(num_idx), dim).uniform_(-scale, scale))
        self.bias = nn.Parameter(torch.empty(len(vocab_sizes), dim).uniform_(-scale, scale))
        self.embed = nn.Embedding(int(cards.sum()), dim)
        nn.init.uniform_(self.embed.weight, -scale, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, self.num_idx]  # [b Fn]
        num = v.nan_to_num()[..., None] * self.weight + v.isnan()[..., None] * self.missing  # [b Fn d]
        cat = self.embed(x[:, self.cat_idx].long() + self.offsets)  # [b Fc d]
        return torch.cat([num, cat], 1)[:, self.order] + self.bias  # [b F d]
