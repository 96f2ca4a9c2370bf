"""SimMIM (Xie et al. 2022, "SimMIM: a simple framework for masked image modeling"; official code
github.com/microsoft/SimMIM): the encoder sees EVERY position, the masked ones as a learned mask token (no tokens
dropped, unlike MAE), and a light head — one linear layer per token — predicts the masked tokens' targets from the
encoder's own output there. No decoder: the encoder itself must fill the gaps.

Mask and target are the domain's, as for MAE: random patches for images (the paper masks 0.6 of the image in 32 px
squares; here the domain's policy), time/frequency bands for spectrograms, tubes for video, features for tables and
RL states — at most `mask_ratio` of the tokens (the paper's 0.6; a random part of a larger mask stays visible). The loss is the domain's reconstruction loss at the masked tokens (per-patch normalised
pixels with a squared error on the grids, where the paper regresses raw pixels with L1: its ablation finds the
choice of ℓ1, smooth ℓ1 or ℓ2 of little consequence), so every domain with masked modelling trains it, text included.

A domain that replaces masked values in the input instead of dropping tokens (text's [MASK] ids, tables in VIME mode:
`drops_masked` False) already hides them: view 0 arrives corrupted (`corrupt_view`), the head predicts the clean
targets there, and no mask token is needed — on text that is BERT's masked language modelling with a linear head."""
import torch
from torch import nn

from multissl.contracts import Masked, optional
from multissl.encoder import gather_tokens


class SimMIM(nn.Module):
    global_views = 1
    needs = (Masked,)  # the domain's masks, targets and loss
    needs_token_encoder = True  # the head reads the encoder's tokens
    mask_tokens = True  # the encoder takes the masked tokens as its mask token (where the domain drops them)
    corrupt_view = True  # a domain that replaces masked values corrupts view 0; the target is the clean one
    collapse_hint = "lower optim.base_lr or objective.mask_ratio: simmim's only force is the reconstruction"

    def __init__(self, encoder, domain, mask_ratio: float | None = 0.6):
        super().__init__()
        self.mask_ratio = mask_ratio  # read by the data loader (contracts: Objective.mask_ratio)
        self.domain = domain  # a plain attribute: target() and reconstruction_loss()
        drops = optional(domain, Masked, "drops_masked")
        self.mask_token = nn.Parameter(torch.zeros(encoder.dim)) if drops else None
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.head = nn.Linear(encoder.dim, domain.target_dim)  # the paper's one-layer prediction head

    def forward(self, encoder, batch, sched):
        x, masked = batch["views"][0], batch["masked"]  # masked [b m], -1 = padding
        pad = {"pad": batch["pad"][0]} if "pad" in batch else {}  # [b n]
        fill = {} if self.mask_token is None else {"masked": masked, "mask_token": self.mask_token}
        tokens, pooled = encoder(x, **pad, **fill)  # [b n d]: every position
        at_masked = optional(self.domain, Masked, "scores_masked_only")
        pred = self.head(gather_tokens(tokens, masked) if at_masked else tokens)  # [b m t] or [b n t]
        target = self.domain.target(batch.get("clean", x))
        loss = self.domain.reconstruction_loss(pred, target, masked)
        return loss, {"rep": pooled.detach()}
