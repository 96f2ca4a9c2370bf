"""Encoder export: weights in safetensors, everything else (domain and encoder config, preprocessing
state) in json. Opening one is as safe as the safetensors inside it: it builds only classes multissl knows
(multissl.registry), checked before anything is built, and never runs pickled code. It is written to a temporary
folder and renamed into place, so a crash or a full disk never leaves half an export."""
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from multissl import registry
from multissl.contracts import Encoder, optional
from multissl.data import to_device
from multissl.errors import UserError, disk_error, needs_extras, reason

FORMAT = "multissl-encoder/1"


class ExportedEncoder(nn.Module):
    """`embed(raw_batch) -> [b d]` applies the domain's preprocessing, then the encoder."""

    def __init__(self, domain, encoder, meta: dict | None = None):
        super().__init__()
        self.domain, self.encoder, self.meta = domain, encoder, meta or {}  # meta: the export's config.json

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
        with needs_extras(f"embedding with domain {self.domain.name}"):
            x = self.domain.preprocess(raw)
        x, pad = x if isinstance(x, tuple) else (x, None)
        x, pad = to_device((x, pad), next(self.encoder.parameters()).device)
        out = (self.encoder(x) if pad is None else self.encoder(x, pad=pad))[1]
        self.train(was)
        return out


    def save_pretrained(self, folder):
        """The encoder in its own library's format, where it has one (encoder=bert, and encoder=hf: transformers, with
        the tokenizer, image processor or feature extractor, for `AutoModel.from_pretrained(folder)`)."""
        save = optional(self.encoder, Encoder, "save_pretrained")
        if save is None:
            raise UserError(f"{type(self.encoder).__name__} has no transformers format; pretrain with encoder=bert "
                            f"or encoder=hf to export one")
        Path(folder).mkdir(parents=True, exist_ok=True)
        save(folder, self.domain)


def save_encoder(folder: Path, encoder: nn.Module | dict, domain_cfg, encoder_cfg, domain_state: dict,
                 inputs: dict | None = None):
    """`encoder`: the module or its whole state_dict (gathered from its shards); `inputs`: what an ONNX graph of it
    takes (multissl.onnx_export.graph_inputs)."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    state = encoder if isinstance(encoder, dict) else encoder.state_dict()
    weights = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {"format": FORMAT,
            "domain": OmegaConf.to_container(domain_cfg, resolve=True),
            "encoder": OmegaConf.to_container(OmegaConf.create(encoder_cfg), resolve=True),
            "preprocess": domain_state,
            "inputs": inputs}
    try:
        tmp.mkdir(parents=True)
        save_file(weights, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        if folder.exists():  # a directory cannot be renamed over a full one: the old export steps aside first
            old = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        why = "no space left (the disk or the file-size limit is full)" if disk_error(e) else reason(e)
        raise UserError(f"cannot write the encoder export to {folder}: {why}; the checkpoints are kept — free space "
                        f"there and relaunch (the run resumes and exports again)") from None


def load_encoder(path) -> ExportedEncoder:
    """A run folder or its `encoder/` folder -> an eval-mode ExportedEncoder. Someone else's export is data: its
    config.json may name only the classes multissl knows (multissl.registry), checked before anything is built."""
    p = Path(path)
    if (p / "encoder" / "config.json").exists():
        p = p / "encoder"
    if not (p / "config.json").exists() or not (p / "model.safetensors").exists():
        raise UserError(f"{path} is not an exported encoder (needs config.json and model.safetensors); "
                        f"pass a run folder or its encoder/ folder")
    source = p / "config.json"
    meta = registry.read_json(source)
    if meta.get("format") != FORMAT:
        raise UserError(f"{source} is not a multissl encoder export (format {meta.get('format')!r}, expected "
                        f"{FORMAT!r}); export it again with this version of multissl")
    registry.check(meta, source, groups=("domain", "encoder"))
    for key in ("domain", "encoder"):
        if not isinstance(meta.get(key), dict) or "_target_" not in meta[key]:
            raise UserError(f"{source} has no {key} to build (a mapping with _target_); export it again")
    if not isinstance(meta.get("preprocess"), (dict, type(None))):
        raise UserError(f"{source}: preprocess must be a mapping; export it again")
    with needs_extras(f"the encoder in {p} (domain {meta['domain']['_target_']})"):
        domain = registry.build(meta["domain"], source, state=meta["preprocess"])
        encoder = registry.build(meta["encoder"], source, domain=domain)
    try:
        encoder.load_state_dict(load_file(str(p / "model.safetensors")))
    except Exception as e:
        raise UserError(f"{p / 'model.safetensors'} does not fit the encoder its config.json describes "
                        f"({reason(e, 120)}); export it again") from None
    return ExportedEncoder(domain, encoder, meta).eval()


USAGE = """python -m multissl.export <run folder or its encoder/ folder> --onnx <file.onnx>

Writes the exported encoder as one ONNX graph with a dynamic batch size (the domain's tensor preprocessing inside
where it has some) and <file>.json beside it: the graph's inputs and output, and the domain's state for what runs
before the graph (text's tokenizer, a table's column encoding). Needs: pip install 'multissl[onnx]'. docs: onnx.md"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    from multissl.onnx_export import export_onnx
    try:
        if len(argv) != 3 or argv[1] != "--onnx":
            raise UserError(f"expected <run> --onnx <file.onnx>, got {' '.join(argv)!r}; e.g. python -m "
                            f"multissl.export runs/my-run --onnx encoder.onnx")
        file = export_onnx(argv[0], argv[2])
    except UserError as e:
        print(f"multissl: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"multissl: wrote {file} and {file.with_suffix('.json')}")


if __name__ == "__main__":
    main()
