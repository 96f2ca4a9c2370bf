"""The transformer's size presets (encoder=vit_s|vit_b|vit_l) are the ViT family's sizes: at 224 px with 16-px patches
their parameters are those of the ViT-S/16, ViT-B/16 and ViT-L/16 backbones (timm's counts without a head; multissl's
class token has no position of its own, one row of the position table fewer). Built on the meta device: no memory."""
import pytest
import torch

from multissl.cli import load_config
from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder

BACKBONE = {"vit_s": 21_665_664, "vit_b": 85_798_656, "vit_l": 303_301_632}


@pytest.mark.parametrize("preset", list(BACKBONE))
def test_a_preset_has_the_parameters_of_its_vit(preset):
    cfg = load_config([f"encoder={preset}", "domain.image_size=224", "domain.patch_size=16"])
    keys = {k: v for k, v in cfg.encoder.items() if k != "_target_"}
    with torch.device("meta"):
        encoder = Encoder(ImageDomain(image_size=224, channels=3, patch_size=16), **keys)
    count = sum(p.numel() for p in encoder.parameters())
    assert count == BACKBONE[preset] - encoder.dim  # the class token's position row
    assert cfg.meta.encoder == preset and keys["mlp_ratio"] == 4.0
