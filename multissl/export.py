"""Encoder export: weights in safetensors, everything else (domain and encoder config, preprocessing
state) in json — loading one never runs pickled code."""
import json
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from multissl.data import to_device
from multissl.errors import UserError


class ExportedEncoder(nn.Module):
    """`embed(raw_batch) -> [b d]` applies the domain's preprocessing, then the encoder."""

    def __init__(self, domain, encoder):
        super().__init__()
        self.domain, self.encoder = domain, encoder

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def forward(self, x, keep=None):
        return self.encoder(x, keep)

    @torch.no_grad()
    def embed(self, raw) -> torch.Tensor:
        """raw: a batch as the user stores it (a tensor, a DataFrame, a list of strings …); the domain's
        `preprocess` makes the model input (a variable-length domain returns (input, padding mask)), which is
        moved to the encoder's device."""
        was = self.training
        self.eval()
        x = self.domain.preprocess(raw)
        x, pad = x if isinstance(x, tuple) else (x, None)
        x, pad = to_device((x, pad), next(self.encoder.parameters()).device)
        out = (self.encoder(x) if pad is None else self.encoder(x, pad=pad))[1]
        self.train(was)
        return out


    def save_pretrained(self, folder):
        """The encoder in its own library's format, where it has one (encoder=bert: transformers, with the
        tokenizer, for `AutoModel.from_pretrained(folder)`)."""
        save = getattr(self.encoder, "save_pretrained", None)
        if save is None:
            raise UserError(f"{type(self.encoder).__name__} has no transformers format; pretrain with encoder=bert "
                            f"(domain=text) to export one")
        Path(folder).mkdir(parents=True, exist_ok=True)
        save(folder, self.domain)


def save_encoder(folder: Path, encoder: nn.Module, domain_cfg, encoder_cfg, domain_state: dict):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(weights, str(folder / "model.safetensors"))
    meta = {"format": "multissl-encoder/1",
            "domain": OmegaConf.to_container(domain_cfg, resolve=True),
            "encoder": OmegaConf.to_container(encoder_cfg, resolve=True),
            "preprocess": domain_state}
    (folder / "config.json").write_text(json.dumps(meta, indent=2))


def load_encoder(path) -> ExportedEncoder:
    """A run folder or its `encoder/` folder -> an eval-mode ExportedEncoder."""
    p = Path(path)
    if (p / "encoder" / "config.json").exists():
        p = p / "encoder"
    if not (p / "config.json").exists() or not (p / "model.safetensors").exists():
        raise UserError(f"{path} is not an exported encoder (needs config.json and model.safetensors); "
                        f"pass a run folder or its encoder/ folder")
    meta = json.loads((p / "config.json").read_text())
    # the state goes to the constructor as it is: through Hydra it would become an OmegaConf tree (a mean frame is
    # ~10^4 numbers: seconds to convert)
    domain = instantiate(meta["domain"], _convert_="all", _partial_=True)(state=meta["preprocess"])
    encoder = instantiate(meta["encoder"], domain=domain, _convert_="all")
    encoder.load_state_dict(load_file(str(p / "model.safetensors")))
    return ExportedEncoder(domain, encoder).eval()
