"""MAE (He et al. 2022): encode the visible tokens only, reconstruct the masked ones with a light decoder.
The target and the loss are the domain's (normalized pixels for images, ids for text, …).

The domain's mask decides what the encoder sees: `keep` disjoint from `masked` drops the masked tokens
(MAE); `keep` covering every token with the masked values replaced in the input (the domain's `corrupt`,
e.g. VIME's marginal draws for tables) reconstructs the clean input from a corrupted one. One decoder path
serves both: the encoded kept tokens are scattered into a sequence of mask tokens."""
import torch
from torch import nn


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
        dec = self.enc_to_dec(tokens)  # [b k dd]
        # positions not in keep stay mask tokens; kept positions get their encoded token
        full = self.mask_token.expand(b, n, -1).scatter(1, keep.unsqueeze(-1).expand_as(dec), dec)  # [b n dd]
        h = self.norm(self.decoder(full + self.pos[:, :n]))
        pred = self.head(h)  # [b n target_dim]: the domain's loss picks the positions it scores
        target = self.domain.target(batch.get("clean", x))  # the uncorrupted input where the domain corrupts
        loss = self.domain.reconstruction_loss(pred, target, masked)
        return loss, {"rep": pooled.detach()}
