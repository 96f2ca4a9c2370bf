"""MAE (He et al. 2022): encode the visible tokens only, reconstruct the masked ones with a light decoder.
The target and the loss are the domain's (normalized pixels for images, ids for text, …).

The domain's mask decides what the encoder sees: `keep` disjoint from `masked` drops the masked tokens
(MAE); `keep` covering every token with the masked values replaced in the input (the domain's `corrupt`,
e.g. VIME's marginal draws for tables) reconstructs the clean input from a corrupted one. One decoder path
serves both: the encoded kept tokens are scattered into a sequence of mask tokens."""
import torch
from torch import nn

from multissl.contracts import Domain, optional
from multissl.encoder import scatter_tokens


class MAE(nn.Module):
    global_views = 1
    needs_token_encoder = True  # the encoder sees only the kept tokens
    corrupt_view = True  # a domain that masks by replacing values (VIME) corrupts view 0; the target is clean

    def __init__(self, encoder, domain, decoder_dim: int = 64, decoder_depth: int = 2, decoder_heads: int = 4):
        super().__init__()
        self.domain = domain  # a plain attribute: target() and reconstruction_loss()
        self.enc_to_dec = nn.Linear(encoder.dim, decoder_dim)
        # where the domain replaces masked values instead of dropping them, keep covers every position
        drops = optional(domain, Domain, "drops_masked")
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim)) if drops else None
        self.pos = nn.Parameter(torch.randn(1, domain.num_tokens, decoder_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(decoder_dim, decoder_heads, 4 * decoder_dim, 0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerEncoder(layer, decoder_depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(decoder_dim)
        self.head = nn.Linear(decoder_dim, domain.target_dim)
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)

    def predict(self, encoder, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (pred [b n target_dim] at every position, pooled [b d]). A variable-length batch's padding
        (batch["pad"][0], [b n]) is never attended to, so each sample's prediction is its own."""
        x, keep = batch["views"][0], batch["keep"]  # keep [b k], -1 = padding
        pad = batch["pad"][0] if "pad" in batch else None
        tokens, pooled = encoder(x, keep) if pad is None else encoder(x, keep, pad=pad)  # [b k d]
        b, n = keep.shape[0], self.pos.shape[1] if pad is None else pad.shape[1]
        dec = self.enc_to_dec(tokens)  # [b k dd]
        # positions not in keep stay mask tokens; kept positions get their encoded token
        base = dec.new_zeros(b, n, dec.shape[-1]) if self.mask_token is None else self.mask_token.expand(b, n, -1)
        full = scatter_tokens(base, keep, dec)  # [b n dd]
        h = self.norm(self.decoder(full + self.pos[:, :n], src_key_padding_mask=pad))
        return self.head(h), pooled

    def forward(self, encoder, batch, sched):
        pred, pooled = self.predict(encoder, batch)  # the domain's loss picks the positions it scores
        target = self.domain.target(batch.get("clean", batch["views"][0]))  # uncorrupted where the domain corrupts
        loss = self.domain.reconstruction_loss(pred, target, batch["masked"])  # masked [b m], -1 = padding
        return loss, {"rep": pooled.detach()}
