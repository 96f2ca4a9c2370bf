"""MLP projector / predictor builder (one function, the widths as a list) and the token predictor that masked
objectives share (MAE's decoder, data2vec's decoder, I-JEPA's predictor)."""
import torch
from torch import nn


def mlp(dims: list[int], last_bias: bool = True, last_bn: bool = False) -> nn.Sequential:
    """Linear-BN-ReLU blocks between consecutive `dims`, then a Linear to the last width (with a bias unless
    last_bias=False). last_bn: a BatchNorm without affine on the output (SimSiam, MoCo v3, NNCLR projectors); the
    Linear before it then has no bias, which the BatchNorm would cancel (it would get no gradient)."""
    layers = []
    for d_in, d_out in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=last_bias and not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(dims[-1], affine=False))
    return nn.Sequential(*layers)


class TokenPredictor(nn.Module):
    """Fills in a token sequence from the encoding of some of its tokens. The encoded kept tokens [b k in_dim] go
    through a Linear to the predictor's width `dim`, are placed at their positions `keep` in a sequence of n learned
    mask tokens, get learned positions added, and pass a pre-norm transformer, a LayerNorm and a Linear head to
    `out_dim` at every position (or at the positions `at` alone). mask_token=False where the input already covers
    every position (a domain that replaces masked values instead of dropping the tokens): positions missing from
    `keep` then start from zeros."""

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, n_tokens: int, out_dim: int,
                 mask_token: bool = True, mlp_ratio: float = 4.0):
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if mask_token else None
        self.pos = nn.Parameter(torch.randn(1, n_tokens, dim) * 0.02)  # n_tokens: the most a sample has
        layer = nn.TransformerEncoderLayer(dim, heads, int(mlp_ratio * dim), 0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_dim)
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor, n: int | None = None,
                pad: torch.Tensor | None = None, at: torch.Tensor | None = None) -> torch.Tensor:
        """tokens [b k in_dim] encoded at positions keep [b k] (-1 = padding, dropped); n: sequence length
        (default: pad's, else n_tokens); pad [b n] True = padding, never attended to. -> [b n out_dim], or
        [b m out_dim] at the positions `at` [b m] alone (-1: padding, rows of position 0)."""
        from multissl.encoder import gather_tokens, scatter_tokens  # here: multissl.encoder imports this module
        b = tokens.shape[0]
        if n is None:
            n = self.pos.shape[1] if pad is None else pad.shape[1]
        x = self.embed(tokens)  # [b k dim]
        # x's dtype: under bf16 autocast the Linear's output is bf16 and the mask token float32
        if self.mask_token is None:
            base = x.new_zeros(b, n, x.shape[-1])
        else:
            base = self.mask_token.to(x.dtype).expand(b, n, -1)
        full = scatter_tokens(base, keep, x)  # [b n dim]: kept positions hold their token, the others mask tokens
        h = self.norm(self.blocks(full + self.pos[:, :n], src_key_padding_mask=pad))  # [b n dim]
        return self.head(h if at is None else gather_tokens(h, at))  # [b n out_dim] or [b m out_dim]
