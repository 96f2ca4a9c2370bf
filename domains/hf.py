"""`encoder=hf`: a transformers model from a local folder, continued on the user's data; one option for every
domain that has one, each with its own adapter: text (domains/text/hf.py: BERT, RoBERTa, ...) and video
(domains/video/hf.py: VideoMAE). Nothing is downloaded; the export records the model's config, not the folder."""
from torch import nn


class HFEncoder(nn.Module):
    """Builds the adapter of the run's domain; the class declares what the adapters share, for checks made before
    any data is loaded."""
    domains = ("text", "video")
    supports_masking = True
    supports_padding = True  # text's; video clips are never padded

    def __new__(cls, domain, **kw):
        from .text.hf import HFTextEncoder
        from .video.hf import HFVideoEncoder
        return {"text": HFTextEncoder, "video": HFVideoEncoder}[domain.name](domain, **kw)

    def __init__(self, domain, pretrained: str | None = None, config: dict | None = None, pool: str | None = None,
                 freeze=None, lr_scale: float = 1.0, layer_decay: float | None = None):
        """The keys every adapter takes, with their defaults (never run: __new__ returns the adapter itself)."""
        super().__init__()
