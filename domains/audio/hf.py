"""`encoder=hf` for audio: a transformers speech or sound model from a local folder, continued on the user's clips.
These models make their own features from the waveform, so the domain hands them the samples (domain.input=waveform)
and each model's tokens are its own frames, which domain.frame must describe (checked at build, the setting named):

- wav2vec 2.0, HuBERT, WavLM, data2vec-audio (`WaveModel`): a strided convolution over the samples, standardized
  per clip first where the model's feature extractor does it; masked objectives' hidden frames get the model's own
  mask embedding (as in its pretraining), so every frame keeps its position.
- AST (`ast.ASTEncoder`): its Kaldi filterbank made inside the encoder; tokens are its time columns.

The models' own random SpecAugment and LayerDrop are switched off: the views and the objective's masks are drawn
from the run's generators (exact resume, equal results on any number of processes). The export records the model's
config, not the folder; what the folder's preprocessor_config.json said travels as buffers."""
import torch
from torch import nn

from multissl.encoder import gather_tokens
from multissl.errors import UserError, require
from multissl.finetune import set_trainable_layers

from ..hf import exported_config, from_config, load_folder, preprocessor


def check_rate(meta: dict, domain):
    rate = meta.get("sampling_rate")
    if rate and int(rate) != domain.rate:
        raise UserError(f"the model reads audio at {rate} Hz, the domain resamples to {domain.rate} Hz; set "
                        f"domain.sample_rate={rate}")


def check_tokens(domain, count, window: int, hop: int, what: str):
    """The model's token count for a clip (count(samples)) must be the domain's, at both view lengths."""
    for samples in sorted({domain.clip, domain.local_clip}):
        if int(count(samples)) != domain.time_tokens(samples):
            raise UserError(f"the model reads {what} of {window} samples every {hop}, the domain cuts "
                            f"{list(domain.frame)}; set domain.frame=[{window}, {hop}]")


def receptive_field(kernels, strides) -> tuple[int, int]:
    """A stack of strided convolutions -> (samples one output sees, samples between outputs)."""
    window, hop = 1, 1
    for k, s in zip(kernels, strides):
        window, hop = window + (k - 1) * hop, hop * s
    return window, hop


def hf_audio(domain, pretrained: str | None = None, config: dict | None = None, pool: str | None = None,
             freeze=None, lr_scale: float = 1.0, layer_decay: float | None = None) -> nn.Module:
    """The adapter of the model in the folder (or of the config's architecture)."""
    transformers = require("transformers", "encoder=hf", "pip install 'multissl[text]'")
    if not domain.waveform:
        raise UserError("encoder=hf on audio reads the waveform (the model makes its own features): set "
                        "domain.input=waveform")
    if pool not in (None, "mean"):
        raise UserError(f"encoder.pool must be mean or unset (the model's own pooling), got {pool!r}")
    if pretrained:
        model = load_folder(transformers, pretrained)
    elif config:
        model = from_config(transformers, config)
    else:
        raise UserError("encoder=hf needs encoder.pretrained=<a local transformers folder> (config.json and "
                        "weights, as save_pretrained writes them)")
    meta = preprocessor(pretrained)
    check_rate(meta, domain)
    if model.config.model_type == "audio-spectrogram-transformer":
        from .ast import ASTEncoder
        enc = ASTEncoder(domain, model, meta, pool)
    elif hasattr(model, "feature_extractor") and hasattr(model, "_get_feat_extract_output_lengths"):
        enc = WaveModel(domain, model, meta, pool)
    else:
        raise UserError(f"encoder.pretrained holds a {model.config.model_type} model; encoder=hf reads wav2vec 2.0, "
                        f"HuBERT, WavLM, data2vec-audio and AST models on audio")
    set_trainable_layers(enc.model, freeze, lr_scale, layer_decay)
    return enc


class WaveModel(nn.Module):
    """wav2vec 2.0 and its kin: waveform [b 1 samples] -> frame tokens [b n d], pooled by their mean."""
    supports_masking = True
    domains = ("audio",)

    def __init__(self, domain, model, meta: dict, pool: str | None):
        super().__init__()
        self.model, self.dim = model, model.config.hidden_size
        c = model.config
        c.mask_feature_prob, c.layerdrop = 0.0, 0.0  # random channel masks and skipped layers: outside the run's rng
        c.apply_spec_augment = True  # the objective's masks go through the model's mask embedding
        window, hop = receptive_field(c.conv_kernel, c.conv_stride)
        check_tokens(domain, lambda n: model._get_feat_extract_output_lengths(torch.tensor(n)), window, hop, "frames")
        # the feature extractor's per-clip standardization (zero mean, unit variance), where the model was trained so
        normalize = meta.get("do_normalize", getattr(c, "feat_extract_norm", "layer") == "layer")
        self.register_buffer("normalize", torch.tensor(float(bool(normalize))))

    def exported_config(self, cfg: dict) -> dict:
        return exported_config(self.model, cfg)

    def save_pretrained(self, folder, domain):
        """The model and its feature extractor in transformers' format: the mean of last_hidden_state over the frames
        of AutoFeatureExtractor's input_values is the representation."""
        transformers = require("transformers", "save_pretrained")
        self.model.save_pretrained(folder)
        transformers.Wav2Vec2FeatureExtractor(sampling_rate=domain.rate, do_normalize=bool(self.normalize),
                                              return_attention_mask=False).save_pretrained(folder)

    def inputs(self, x, keep):
        """x [b 1 samples] -> the model's input_values [b samples] and its frames to hide [b n] (outside keep)."""
        w = x[:, 0]
        z = (w - w.mean(-1, keepdim=True)) / (w.var(-1, keepdim=True, unbiased=False) + 1e-7).sqrt()
        w = self.normalize * z + (1 - self.normalize) * w
        n = int(self.model._get_feat_extract_output_lengths(w.shape[-1]))
        hidden = torch.zeros(w.shape[0], n, dtype=torch.bool, device=w.device)
        if keep is not None:
            if not hasattr(self.model, "masked_spec_embed"):
                raise UserError("the model has no mask embedding (its config's mask_time_prob is 0); use an objective "
                                "without masks")
            hidden = ~hidden.scatter(1, keep, True)
        return w, hidden

    def forward(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        """x [b 1 samples], keep [b k] kept frames -> (tokens [b k d] in keep's order, their mean [b d])."""
        if pad is not None:
            raise UserError("encoder=hf reads fixed-length clips, not padded sequences")
        w, hidden = self.inputs(x, keep)
        t = self.model(input_values=w, mask_time_indices=hidden).last_hidden_state  # [b n d]
        t = t if keep is None else gather_tokens(t, keep)
        return t, t.mean(1)

    def hidden_states(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None) -> list:
        """Every layer's output frames [b k d], first to last (data2vec's targets)."""
        w, hidden = self.inputs(x, keep)
        out = self.model(input_values=w, mask_time_indices=hidden, output_hidden_states=True).hidden_states[1:]
        return [h if keep is None else gather_tokens(h, keep) for h in out]
