"""SimCLR + MAE on one batch: a contrastive term and a reconstruction term together, as tabular SSL pairs them
(SAINT, SubTab: contrastive + denoising) and as contrastive masked autoencoders do for images. View 0 is masked the
MAE way — the domain's mask drops tokens, or, where the domain corrupts values (VIME, masked language modelling),
it is the sample itself corrupted at the mask — and the decoder reconstructs it; NT-Xent pulls its projection
towards view 1's (a SCARF row, another crop) against the rest of the global batch. Reconstruction keeps what
the contrastive invariance would throw away."""
import torch
import torch.nn.functional as F
from torch import nn

from multissl.contracts import Masked
from multissl.encoder import encode_views
from multissl.heads import mlp

from .mae import MAE
from .simclr import nt_xent_loss


class SimCLRMAE(nn.Module):
    global_views = 2
    needs = (Masked,)
    needs_token_encoder = True  # view 0 is encoded from its kept tokens
    corrupt_view = True
    batch_statistics = True  # negatives come from the batch
    collapse_hint = "raise objective.recon_weight, or try objective.temperature between 0.1 and 0.5"

    def __init__(self, encoder, domain, projector=(256, 128), temperature: float = 0.1, recon_weight: float = 1.0,
                 decoder_dim: int = 64, decoder_depth: int = 2, decoder_heads: int = 4):
        super().__init__()
        self.projector = mlp([encoder.dim, *projector])
        self.mae = MAE(encoder, domain, decoder_dim, decoder_depth, decoder_heads)
        self.temperature, self.recon_weight = temperature, recon_weight

    def forward(self, encoder, batch, sched):
        pred, masked_rep = self.mae.predict(encoder, batch)  # view 0, masked: pred (MAE.predict), [b d]
        recon = self.mae.reconstruction(pred, batch)
        pads = batch.get("pad")
        other = encode_views(encoder, batch["views"][1:2], pads[1:2] if pads else None)[0]  # view 1, whole [b d]
        z_a, z_b = self.projector(masked_rep), self.projector(other)
        contrast = nt_xent_loss(z_a, z_b, self.temperature)
        with torch.no_grad():
            pos_cos = F.cosine_similarity(z_a, z_b, dim=-1).mean()
        return contrast + self.recon_weight * recon, {"rep": masked_rep.detach(), "contrast": contrast.detach(),
                                                      "recon": recon.detach(), "pos_cos": pos_cos}
