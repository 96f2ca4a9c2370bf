"""`encoder=hf` for clips: a transformers video model from a local folder (VideoMAE and its kin: an AutoModel whose
forward takes pixel_values [b t c h w] and bool_masked_pos), to continue pretraining on the user's clips. The
clip's frames, side and tubelet must be the model's (its positions are fixed for them); gray clips are repeated to
the model's three channels; the domain's standardisation is mapped to the model's own (preprocessor_config.json's
image_mean / image_std, else ImageNet's) inside the encoder, as encoder=timm does for images. Masked objectives'
kept tubelets go in as VideoMAE's visible positions. The export records the model's config, not the folder."""

import torch
from torch import nn

from multissl.errors import UserError, require
from multissl.finetune import per_channel, renormalise, set_trainable_layers

from ..hf import exported_config, from_config, load_folder, preprocessor

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def statistics(folder: str) -> tuple:
    """(mean, std) the model's image processor normalises with."""
    meta = preprocessor(folder)
    return tuple(meta.get("image_mean") or IMAGENET[0]), tuple(meta.get("image_std") or IMAGENET[1])


class HFVideoEncoder(nn.Module):
    supports_masking = True
    domains = ("video",)

    def __init__(self, domain, pretrained: str | None = None, config: dict | None = None, pool: str | None = None,
                 freeze=None, lr_scale: float = 1.0, layer_decay: float | None = None):
        super().__init__()
        transformers = require("transformers", "encoder=hf", "pip install 'multissl[text]'")
        if pool not in (None, "mean"):
            raise UserError(f"encoder.pool={pool}: a video model has no [CLS] here; its representation is the mean "
                            f"of its tokens (leave encoder.pool unset)")
        mean, std = IMAGENET
        if pretrained:
            self.model = load_folder(transformers, pretrained)
            mean, std = statistics(pretrained)
        elif config:  # a model from its config, random (what an export records; its weights are loaded after)
            self.model = from_config(transformers, {"image_size": domain.size, "num_frames": domain.frames,
                                                    "num_channels": 3, **config})
        else:
            raise UserError("encoder=hf needs encoder.pretrained=<a local transformers folder> (config.json and "
                            "weights, as save_pretrained writes them)")
        c = self.model.config
        self.dim, self.channels = c.hidden_size, c.num_channels
        want = (c.num_frames, c.image_size, (c.tubelet_size, c.patch_size, c.patch_size))
        have = (domain.frames, domain.size, tuple(domain.tubelet))
        if want != have:
            raise UserError(f"the model reads {c.num_frames} frames of {c.image_size} px in tubelets "
                            f"{list(want[2])}, the domain gives {have[0]} of {have[1]} px in {list(have[2])}; set "
                            f"domain.frames={c.num_frames} domain.size={c.image_size} domain.tubelet={list(want[2])}")
        if domain.channels not in (1, self.channels):
            raise UserError(f"the clips have {domain.channels} channels, the model reads {self.channels}")
        # the domain's standardisation -> the model's (gray repeated to its channels first)
        scale, shift = renormalise(domain.mean, domain.std, mean, std, self.channels, 5)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)
        set_trainable_layers(self.model, freeze, lr_scale, layer_decay)

    def exported_config(self, cfg: dict) -> dict:
        return exported_config(self.model, cfg)

    def own_statistics(self, domain) -> tuple[list, list]:
        """The model's own per-channel mean and std, read back from the map: scale = std_d / std_m and
        shift = (mean_d - mean_m) / std_m."""
        std = per_channel(domain.std, self.channels) / self.scale.flatten()
        return (per_channel(domain.mean, self.channels) - self.shift.flatten() * std).tolist(), std.tolist()

    def save_pretrained(self, folder, domain):
        """The model and its image processor in transformers' format: the mean of last_hidden_state over the tokens
        of AutoImageProcessor's pixel_values (RGB frames in [0, 1], or uint8) is the representation."""
        transformers = require("transformers", "save_pretrained")
        self.model.save_pretrained(folder)
        mean, std = self.own_statistics(domain)
        side = self.model.config.image_size
        transformers.VideoMAEImageProcessor(image_mean=mean, image_std=std, size={"shortest_edge": side},
                                            crop_size={"height": side, "width": side}).save_pretrained(folder)

    def forward(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        """x [b c t h w] standardised by the domain; keep [b k] visible tubelets -> (tokens [b k d], mean [b d])."""
        if pad is not None:
            raise UserError("encoder=hf reads fixed-length clips, not padded sequences")
        x = x.expand(-1, self.channels, -1, -1, -1) * self.scale + self.shift
        hidden = None
        if keep is not None:  # VideoMAE keeps the visible tubelets in grid order: sorted here, keep's order restored
            b, n = x.shape[0], self.model.embeddings.num_patches
            hidden = torch.ones(b, n, dtype=torch.bool, device=x.device).scatter(1, keep, False)
        t = self.model(pixel_values=x.transpose(1, 2), bool_masked_pos=hidden).last_hidden_state  # [b k d]
        if keep is not None:
            order = keep.argsort(1).argsort(1)  # rank of each kept index = its row among the sorted ones
            t = torch.gather(t, 1, order.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
        return t, t.mean(1)
