"""AST (the Audio Spectrogram Transformer, transformers' ASTModel) under `encoder=hf`. The model reads its own Kaldi
filterbank, which the encoder makes from the waveform as ASTFeatureExtractor does (25 ms Hanning frames every 10 ms,
DC offset removed, pre-emphasis 0.97, log mel bins from 20 Hz, normalized by the extractor's mean and twice its std),
batched and as matrix products so that it runs on the device and inside an ONNX graph. Its tokens are overlapping
16 x 16 filterbank patches on a [frequency time] grid; the encoder gives one token per time column (the mean over
its frequency patches), and masked objectives keep or drop whole columns. A model built for longer clips than the
run's has its time positions cut to the clip's columns, centred; one built for shorter clips has them interpolated
(AST's own recipe for other lengths), and its config records the new length."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from multissl.errors import UserError, require

from ..hf import exported_config
from .hf import check_tokens

AUDIOSET = (-4.2677393, 4.5689974)  # ASTFeatureExtractor's defaults


class KaldiFbank(nn.Module):
    """Waveforms [b samples] -> normalized log mel filterbank [b frames mel], Kaldi's (torchaudio.compliance.kaldi
    .fbank with window_type=hanning, as ASTFeatureExtractor calls it)."""

    def __init__(self, rate: int, n_mels: int, mean: float, std: float):
        super().__init__()
        from torchaudio.compliance.kaldi import get_mel_banks
        self.window, self.hop = int(rate * 0.025), int(rate * 0.010)
        n_fft = 2 ** math.ceil(math.log2(self.window))
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        angle = 2 * math.pi * torch.arange(self.window, dtype=torch.float64)[:, None] * k[None] / n_fft
        banks = F.pad(get_mel_banks(n_mels, n_fft, float(rate), 20.0, 0.0, 100.0, -500.0, 1.0)[0], (0, 1))
        # the real DFT of a zero-padded frame as two products, in float64 (quiet frames' logs are sensitive)
        self.register_buffer("cos", angle.cos(), persistent=False)  # [window bins]
        self.register_buffer("sin", angle.sin(), persistent=False)
        self.register_buffer("banks", banks.T.double(), persistent=False)  # [bins mel]
        self.register_buffer("taper", torch.hann_window(self.window, periodic=False, dtype=torch.float64),
                             persistent=False)
        self.register_buffer("stats", torch.tensor([mean, 2 * std]))  # the model's normalization, kept in the export

    def frames(self, samples: int) -> int:
        return (samples - self.window) // self.hop + 1

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        f = w.double().unfold(-1, self.window, self.hop)  # [b m window]
        f = f - f.mean(-1, keepdim=True)
        f = f - 0.97 * torch.cat([f[..., :1], f[..., :-1]], -1)  # pre-emphasis, the first sample against itself
        f = f * self.taper
        power = (f @ self.cos).pow(2) + (f @ self.sin).pow(2)  # [b m bins]
        fbank = (power @ self.banks).clamp_min(torch.finfo(torch.float32).eps).log()  # [b m mel]
        return ((fbank - self.stats[0]) / self.stats[1]).to(w.dtype)


def fit_positions(model, columns: int, frames: int):
    """The model's position table for `columns` time columns (a clip of `frames` filterbank frames): the centre
    ones, or all of them interpolated."""
    emb, c = model.embeddings, model.config
    rows, old = emb.get_shape(c)
    if old == columns:
        return
    print(f"multissl: encoder=hf AST built for {c.max_length} filterbank frames ({old} time columns) reads clips of "
          f"{frames} ({columns}): its time positions {'cut to the centre ones' if columns < old else 'interpolated'}",
          flush=True)
    table = emb.position_embeddings.data  # [1 2+rows*old d]
    grid = table[:, 2:].transpose(1, 2).reshape(1, -1, rows, old)
    if columns < old:
        grid = grid[..., (old - columns) // 2:(old - columns) // 2 + columns]
    else:
        grid = F.interpolate(grid, size=(rows, columns), mode="bilinear", align_corners=False)
    emb.position_embeddings = nn.Parameter(torch.cat([table[:, :2], grid.flatten(2).transpose(1, 2)], 1))
    c.max_length = frames


class ASTEncoder(nn.Module):
    """waveform [b 1 samples] -> time-column tokens [b t d], pooled as AST pools ([CLS] and distillation tokens)."""
    supports_masking = True
    domains = ("audio",)

    def __init__(self, domain, model, meta: dict, pool: str | None):
        super().__init__()
        self.model, self.pool, c = model, pool, model.config
        self.dim = c.hidden_size
        mean, std = (meta.get("mean", AUDIOSET[0]), meta.get("std", AUDIOSET[1])) if meta.get("do_normalize", True) \
            else (0.0, 0.5)
        self.fbank = KaldiFbank(domain.rate, c.num_mel_bins, mean, std)
        if self.fbank.frames(domain.clip) < c.patch_size:
            raise UserError(f"AST reads at least {c.patch_size} filterbank frames; set domain.clip_seconds higher")
        fit_positions(model, self.columns(domain.clip), self.fbank.frames(domain.clip))
        hop = self.fbank.hop * c.time_stride
        check_tokens(domain, self.columns, self.fbank.window + (c.patch_size - 1) * self.fbank.hop, hop, "columns")

    def columns(self, samples: int) -> int:
        return (self.fbank.frames(samples) - self.model.config.patch_size) // self.model.config.time_stride + 1

    def exported_config(self, cfg: dict) -> dict:
        return exported_config(self.model, cfg)

    def save_pretrained(self, folder, domain):
        """The model (its positions as fitted to the clip) and its feature extractor in transformers' format:
        pooler_output of AutoFeatureExtractor's input_values is the representation (encoder.pool unset)."""
        transformers = require("transformers", "save_pretrained")
        c, (mean, twice_std) = self.model.config, self.fbank.stats.tolist()
        self.model.save_pretrained(folder)
        transformers.ASTFeatureExtractor(sampling_rate=domain.rate, num_mel_bins=c.num_mel_bins,
                                         max_length=c.max_length, mean=mean, std=twice_std / 2).save_pretrained(folder)

    def blocks(self, x, keep):
        """x [b 1 samples] -> the patch grid's hidden states after each block [b 2+f*k d] (kept columns only), and
        the grid's rows f."""
        emb = self.model.embeddings
        p = emb.patch_embeddings(self.fbank(x[:, 0]))  # [b f*t d], frequency rows, time fastest
        b, _, d = p.shape
        rows, table_cols = emb.get_shape(self.model.config)
        t = p.shape[1] // rows
        pos = emb.position_embeddings
        grid = p.view(b, rows, t, d) + pos[:, 2:].view(1, rows, table_cols, d)[:, :, :t]  # shorter views: leading
        if keep is not None:
            grid = torch.gather(grid, 2, keep[:, None, :, None].expand(b, rows, keep.shape[1], d))
        special = torch.cat([emb.cls_token, emb.distillation_token], 1) + pos[:, :2]  # [1 2 d]
        h = emb.dropout(torch.cat([special.expand(b, -1, -1), grid.flatten(1, 2)], 1))
        out = []
        for layer in self.model.layers:
            h = layer(h, None)
            out.append(h)
        return out, rows

    @staticmethod
    def columns_of(h, rows: int):
        """[b 2+f*k d] -> one token per time column, the mean of its frequency patches [b k d]."""
        b, n, d = h.shape
        return h[:, 2:].view(b, rows, (n - 2) // rows, d).mean(1)

    def forward(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None):
        if pad is not None:
            raise UserError("encoder=hf reads fixed-length clips, not padded sequences")
        out, rows = self.blocks(x, keep)
        h = self.model.layernorm(out[-1])
        t = self.columns_of(h, rows)
        return t, (t.mean(1) if self.pool == "mean" else (h[:, 0] + h[:, 1]) / 2)

    def hidden_states(self, x, keep: torch.Tensor | None = None, pad: torch.Tensor | None = None) -> list:
        out, rows = self.blocks(x, keep)
        return [self.columns_of(h, rows) for h in out]
