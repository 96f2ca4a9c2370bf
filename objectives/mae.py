"""MAE (He et al. 2022): encode the visible tokens only, reconstruct the masked ones with a light decoder.
The target and the loss are the domain's (normalized pixels for images, ids for text, …).

The domain's mask decides what the encoder sees: `keep` disjoint from `masked` drops the masked tokens
(MAE); `keep` covering every token with the masked values replaced in the input (the domain's `corrupt`,
e.g. VIME's marginal draws for tables) reconstructs the clean input from a corrupted one. One decoder path
serves both: the encoded kept tokens are scattered into a sequence of mask tokens (multissl.heads.TokenPredictor)."""
import torch
from torch import nn

from multissl.contracts import Masked, optional
from multissl.heads import TokenPredictor


class MAE(nn.Module):
    global_views = 1
    needs = (Masked,)  # the domain's masks and targets
    needs_token_encoder = True  # the encoder sees only the kept tokens
    corrupt_view = True  # a domain that masks by replacing values (VIME) corrupts view 0; the target is clean

    def __init__(self, encoder, domain, decoder_dim: int = 64, decoder_depth: int = 2, decoder_heads: int = 4):
        super().__init__()
        self.domain = domain  # a plain attribute: target() and reconstruction_loss()
        # where the domain replaces masked values instead of dropping them, keep covers every position
        self.decoder = TokenPredictor(encoder.dim, decoder_dim, decoder_depth, decoder_heads, domain.num_tokens,
                                      domain.target_dim, mask_token=optional(domain, Masked, "drops_masked"))

    def predict(self, encoder, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (pred [b n target_dim] at every position, or [b m target_dim] at the masked ones where the domain
        scores only those, pooled [b d]). A variable-length batch's padding (batch["pad"][0], [b n]) is never
        attended to, so each sample's prediction is its own."""
        x, keep = batch["views"][0], batch["keep"]  # keep [b k], -1 = padding
        pad = batch["pad"][0] if "pad" in batch else None
        tokens, pooled = encoder(x, keep) if pad is None else encoder(x, keep, pad=pad)  # [b k d]
        at = batch["masked"] if optional(self.domain, Masked, "scores_masked_only") else None
        return self.decoder(tokens, keep, pad=pad, at=at), pooled

    def reconstruction(self, pred: torch.Tensor, batch) -> torch.Tensor:
        """The domain's loss of `predict`'s pred at the masked positions (masked [b m], -1 = padding) against
        its target of the clean view 0 (uncorrupted where the domain corrupts)."""
        target = self.domain.target(batch.get("clean", batch["views"][0]))
        return self.domain.reconstruction_loss(pred, target, batch["masked"])

    def forward(self, encoder, batch, sched):
        pred, pooled = self.predict(encoder, batch)
        return self.reconstruction(pred, batch), {"rep": pooled.detach()}
