"""`encoder=hf`: a transformers model from a local folder, continued on the user's data; one option for every
domain that has one, each with its own adapter: text (domains/text/hf.py: BERT, RoBERTa, ...), video
(domains/video/hf.py: VideoMAE) and audio (domains/audio/hf.py: wav2vec 2.0, HuBERT, WavLM, AST). Nothing is
downloaded; the export records the model's config, not the folder."""
import json
from pathlib import Path

from torch import nn

from multissl.errors import UserError, reason


def load_folder(transformers, folder: str):
    """AutoModel from a local folder save_pretrained wrote (config.json + weights), opened with local_files_only
    and never running code from it; no pooler where the model builds one (the representation does not use it).
    Every weight the model needs must be in the folder: transformers would start the missing ones at random (a
    normalization layer missing from a pretraining checkpoint starts as the identity, and the run says so)."""
    p = Path(folder).expanduser()
    if not (p / "config.json").is_file():
        raise UserError(f"encoder.pretrained={folder} is not a local transformers checkpoint (no config.json); save "
                        f"one with model.save_pretrained(folder)")
    try:
        model, info = without_pooler(lambda **kw: transformers.AutoModel.from_pretrained(
            str(p), local_files_only=True, output_loading_info=True, **kw))
    except Exception as e:
        raise UserError(f"cannot load encoder.pretrained={folder}: {reason(e)}") from None
    missing = sorted(info.get("missing_keys") or ())
    if missing and all("norm" in k.lower() for k in missing):
        print(f"multissl: encoder.pretrained={folder} has no {', '.join(missing)}: that normalization starts "
              f"as the identity", flush=True)
    elif missing:
        raise UserError(f"encoder.pretrained={folder} lacks {len(missing)} weights of its {model.config.model_type} "
                        f"model ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); it would start them "
                        f"at random: save the whole model with save_pretrained")
    return model


def preprocessor(folder: str | None) -> dict:
    """The folder's preprocessor_config.json (what the model's feature extractor or image processor does to its
    input), read as data; {} without one."""
    f = Path(folder).expanduser() / "preprocessor_config.json" if folder else None
    return json.loads(f.read_text(encoding="utf-8")) if f and f.is_file() else {}


def from_config(transformers, config: dict):
    """A random model of a config's architecture (`model_type` + its keys: what an export records)."""
    kw = dict(config)
    made = transformers.AutoConfig.for_model(kw.pop("model_type"), **kw)
    return without_pooler(lambda **more: transformers.AutoModel.from_config(made, **more))


def without_pooler(build):
    try:  # BERT-like models
        return build(add_pooling_layer=False)
    except TypeError:  # models without one (DistilBERT, DeBERTa, VideoMAE, ...)
        return build()


def exported_config(model, cfg: dict) -> dict:
    """The model's own config instead of the folder: the export holds the weights."""
    return {**cfg, "pretrained": None, "config": model.config.to_dict(), "freeze": None}


class HFEncoder(nn.Module):
    """Builds the adapter of the run's domain; the class declares what the adapters share, for checks made before
    any data is loaded."""
    domains = ("text", "video", "audio")
    supports_masking = True
    supports_padding = True  # text's; clips are never padded

    def __new__(cls, domain, **kw):
        from .audio.hf import hf_audio
        from .text.hf import HFTextEncoder
        from .video.hf import HFVideoEncoder
        return {"text": HFTextEncoder, "video": HFVideoEncoder, "audio": hf_audio}[domain.name](domain, **kw)

    def __init__(self, domain, pretrained: str | None = None, config: dict | None = None, pool: str | None = None,
                 freeze=None, lr_scale: float = 1.0, layer_decay: float | None = None):
        """The keys every adapter takes, with their defaults (never run: __new__ returns the adapter itself)."""
        super().__init__()
