"""The audio domain (`domain=audio`): mono waveforms -> normalized log-mel spectrograms [1 mel frames] -> time x
frequency patch tokens (AST / SSAST / Audio-MAE), or the waveform itself [1 samples] in frames
(domain.input=waveform). Default data: spoken words synthesized offline (espeak.py); else a folder of audio files,
an HF dataset, or waveforms in memory (`memory_waves`).

    sources.py      where clips come from and how one is read (files, HF rows, memory, the spoken words)
    spectrogram.py  waveforms -> the model input: clip length, log-mel, per-bin normalization and its statistics
    views.py        BYOL-A style views: per-sample draws and their batched apply on the device
    domain.py       AudioDomain: the recipe, data, state, and thin members over the modules above
    hf.py, ast.py   encoder=hf's speech (wav2vec 2.0, HuBERT, ...) and sound (AST) models, on the waveform input
"""
from .domain import AudioDomain
from .sources import (AUDIO_EXT, MEMORY, OTHER_AUDIO_EXT, Waves, as_float, is_wave, long_enough, memory_clip,
                      memory_waves, read_audio, resample, to_mono)
from .spectrogram import fit_length
from .views import mix_at_snr

__all__ = ["AUDIO_EXT", "AudioDomain", "MEMORY", "OTHER_AUDIO_EXT", "Waves", "as_float", "fit_length", "is_wave",
           "long_enough", "memory_clip", "memory_waves", "mix_at_snr", "read_audio", "resample", "to_mono"]
