"""MAE (He et al. 2022): encode the visible tokens only, reconstruct the masked ones with a light decoder.
The target and the loss are the domain's (normalized pixels for images, ids for text, …)."""
import torch
from torch import nn

from multissl.encoder import gather_tokens


class MAE(nn.Module):
    global_views = 1
    needs_tokens = True

    def __init__(self, encoder, domain, decoder_dim: int = 64, decoder_depth: int = 2, decoder_heads: int = 4):
        super().__init__()
        self.domain = domain  # a plain attribute: target() and reconstruction_loss()
        self.enc_to_dec = nn.Linear(encoder.dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.pos = nn.Parameter(torch.randn(1, domain.num_tokens, decoder_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(decoder_dim, decoder_heads, 4 * decoder_dim, 0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerEncoder(layer, decoder_depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(decoder_dim)
        self.head = nn.Linear(decoder_dim, domain.target_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, encoder, batch, sched):
        x, keep, masked = batch["views"][0], batch["keep"], batch["masked"]  # keep [b k], masked [b m]
        tokens, pooled = encoder(x, keep)  # [b k d]
        b, n = keep.shape[0], self.pos.shape[1]
        seq = torch.cat([self.enc_to_dec(tokens), self.mask_token.expand(b, masked.shape[1], -1)], 1)
        order = torch.cat([keep, masked], 1)  # [b n]: where each element of seq belongs
        full = torch.zeros_like(seq).scatter(1, order.unsqueeze(-1).expand_as(seq), seq)  # [b n dd]
        h = self.norm(self.decoder(full + self.pos[:, :n]))
        pred = self.head(gather_tokens(h, masked))  # [b m target_dim]
        loss = self.domain.reconstruction_loss(pred, self.domain.target(x), masked)
        return loss, {"rep": pooled.detach()}
