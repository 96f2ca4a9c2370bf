"""Where audio clips come from and how one is read: the default spoken words (espeak.py), a folder of audio files,
an HF audio dataset, shards of either (domains.shards), or waveforms in memory (`memory_waves`) -> splits of mono
float32 clips [samples] at the run's sample rate, read lazily, every failure a one-line UserError naming the clip."""
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch

from multissl.errors import UserError

from ..cache import default_cache_dir
from ..files import Files, hf_splits, labelled, scan, split_folders
from ..memory import describe, is_array, memory_split, numpy, unpack
from ..rows import label_column, row_split
from ..shards import Shards, file_records, file_split, row_records

AUDIO_EXT = {".wav", ".flac", ".ogg", ".mp3"}  # what soundfile (libsndfile) reads
OTHER_AUDIO_EXT = {".m4a", ".aac", ".wma", ".mp4", ".amr", ".aiff", ".opus", ".webm"}


class Waves(torch.utils.data.Dataset):
    """Clips in memory: int16 or float [n samples] (or a list of 1-D clips of any length)."""

    def __init__(self, waves, labels):
        self.waves, self.y = waves, torch.as_tensor(labels, dtype=torch.long)

    def __len__(self):
        return len(self.waves)

    def __getitem__(self, i):
        return {"x": as_float(self.waves[i]), "y": int(self.y[i])}


def as_float(w) -> torch.Tensor:
    w = torch.as_tensor(np.asarray(w))
    return w.float() / 32768 if w.dtype == torch.int16 else w.float()


@lru_cache(maxsize=8)
def _resampler(rate: int, target: int):
    import torchaudio
    return torchaudio.transforms.Resample(rate, target, dtype=torch.float32)


def resample(w: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    """float32 [.. samples] at `rate` -> at `target`: torchaudio's sinc resampling, its kernel built once per
    pair of rates (building it took most of the time of resampling a one-second clip)."""
    return w if rate == target else _resampler(int(rate), int(target))(w)


def to_mono(wave: np.ndarray, rate: int, target: int) -> torch.Tensor:
    """[samples] or [samples channels] at `rate` -> float32 [samples'] at `target`."""
    w = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    if w.ndim == 2:
        w = w.mean(1)
    return resample(w, rate, target)


def read_audio(path, rate: int, min_samples: int = 1, name: str | None = None) -> torch.Tensor:
    """One file (a path, or a file-like such as an HF row's bytes; `name` names it in errors) -> float32 mono
    [samples] at `rate`; every failure is a one-line UserError naming it."""
    import soundfile as sf
    fix = "(or set data.skip_bad=true to skip unreadable samples)"
    name = name or path
    if isinstance(path, (str, Path)) and Path(path).suffix.lower() in OTHER_AUDIO_EXT:
        raise UserError(f"{path}: {Path(path).suffix} files are not supported (readable: "
                        f"{' '.join(sorted(AUDIO_EXT))}); convert it, e.g. ffmpeg -i in.m4a out.flac {fix}")
    try:
        wave, sr = sf.read(str(path) if isinstance(path, Path) else path, dtype="float32", always_2d=False)
    except Exception as e:
        raise UserError(f"cannot read audio {name}: {str(e).splitlines()[0][:120]}; remove or fix the file "
                        f"{fix}") from None
    long_enough(len(wave), f"audio file {name}", 1, rate, f"remove it {fix}")
    w = to_mono(wave, sr, rate)
    long_enough(len(w), f"audio file {name}", min_samples, rate, f"remove it or lower domain.patch_size[1] {fix}")
    return w


def long_enough(n: int, what: str, min_samples: int, rate: int, fix: str):
    """A clip of n samples at `rate` holds at least one sample and one patch (min_samples); else a UserError."""
    if n == 0:
        raise UserError(f"{what} is empty (0 samples); {fix}")
    if n < min_samples:
        raise UserError(f"{what} is {1000 * n / rate:.0f} ms long, shorter than one patch "
                        f"({1000 * min_samples / rate:.0f} ms); {fix}")


MEMORY = ("mono waveforms at domain.sample_rate: floats (or int16) [n, samples], or a list or Dataset of 1-D clips, "
          "as (clips, labels) for labels")


def memory_waves(obj, rate: int, min_samples: int) -> Files:
    """In-memory waveforms (MEMORY) -> a split read lazily as files are, each clip checked as a file's when read
    (`memory_clip`); a batch array's dtype and shape are checked here, and the first clip is read."""
    samples, labels = unpack(obj)
    if is_array(samples) and (samples.ndim != 2 or not is_wave(numpy(samples))):
        fix = {1: "one clip is x[None]", 3: "downmix the channels, x.mean(-1)"}.get(samples.ndim)
        raise UserError(f"data.path holds {describe(samples)}; the audio domain reads {MEMORY}: "
                        f"{fix or 'convert to float32 in [-1, 1]'}")
    if not (is_array(samples) or isinstance(samples, (list, torch.utils.data.Dataset))) or not len(samples):
        raise UserError(f"data.path holds {describe(samples)}; the audio domain reads {MEMORY}")
    split = memory_split(samples, labels, partial(memory_clip, rate=rate, min_samples=min_samples), "clip")
    split[0]  # a wrong kind of sample is said now, not in a loader worker
    return split


def is_wave(a: np.ndarray) -> bool:
    return a.dtype.kind == "f" or a.dtype == np.int16


def memory_clip(w, rate: int, min_samples: int, name: str) -> torch.Tensor:
    """One in-memory clip (1-D float or int16, at `rate`) -> float32 [samples]; anything else a UserError."""
    a = numpy(w) if is_array(w) or isinstance(w, list) else None
    if a is None or a.ndim != 1 or not is_wave(a):
        raise UserError(f"{name} is {describe(w)}; the audio domain reads {MEMORY}")
    long_enough(len(a), name, min_samples, rate, "drop it or lower domain.patch_size[1]")
    return as_float(a)


def spoken_words(cache_dir: str | None, rate: int, clip: int) -> dict:
    """The default data: words spoken by espeak voices (espeak.py), made once into the cache, clips of `clip`
    samples; the test split holds speakers unseen in training."""
    from .. import espeak
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "audio"
    d = espeak.spoken_words(cache, rate, clip / rate)
    test = d["test"]
    return {"train": Waves(torch.from_numpy(d["wave"][~test]), d["word"][~test]),
            "test": Waves(torch.from_numpy(d["wave"][test]), d["word"][test])}


def listed(root: Path, skip_bad: bool) -> dict[str, tuple[list[Path], list[int], dict]]:
    """A folder of audio files (train/ and test/ or one unsplit folder, optionally in class subfolders) -> per split
    its files (sorted), their labels and the training classes {name: id}."""
    out, classes = {}, None
    for split, d in split_folders(root).items():
        files = scan(d, AUDIO_EXT | OTHER_AUDIO_EXT)
        if not any(f.suffix.lower() in AUDIO_EXT for f in files) and not (skip_bad and files):
            other = sorted({f.suffix for f in files})
            hint = f" (found {' '.join(other)}: convert to .flac or .wav)" if other else ""
            raise UserError(f"no audio files ({' '.join(sorted(AUDIO_EXT))}) under {d}{hint}; put audio "
                            f"files (optionally in class subfolders) there")
        labels, classes = labelled(files, d, classes)
        out[split] = files, labels, classes
    return out


def folder_splits(root: Path, rate: int, min_samples: int, skip_bad: bool) -> dict:
    """A folder of audio files (`listed`) -> splits whose clips are read when their item is asked for."""
    read = partial(read_audio, rate=rate, min_samples=min_samples)
    return {split: Files(files, labels, classes, read, skip_bad)
            for split, (files, labels, classes) in listed(root, skip_bad).items()}


def audio_column(feats, where) -> str:
    import datasets
    col = next((k for k, v in feats.items() if isinstance(v, datasets.Audio)), None)
    if col is None:
        raise UserError(f"HF dataset at {where} has no Audio column (columns: {list(feats)})")
    return col


def hf_audio(path, from_disk: bool, rate: int, min_samples: int, skip_bad: bool) -> dict:
    """An HF `datasets` audio dataset, each row decoded with soundfile (no torchcodec needed) when its item is
    asked for (rows.Rows): the split stays memory-mapped, and the labels come from their column alone."""
    splits = hf_splits(path, from_disk)
    import datasets
    feats = splits["train"].features
    col, read = audio_column(feats, path), partial(read_audio, rate=rate, min_samples=min_samples)
    return {k: row_split(ds, col, datasets.Audio(decode=False), str(path), read, label_column(feats), skip_bad)
            for k, ds in splits.items()}


def shard_splits(where: str, rate: int, min_samples: int, skip_bad: bool) -> dict:
    """Shards of audio files (domains.shards), each item decoded when its item is asked for, as a file is."""
    shards = Shards(where, "audio")
    read = partial(read_audio, rate=rate, min_samples=min_samples)
    return {split: file_split(shards, split, read, skip_bad) for split in shards.splits}


def records(kind: str, where, skip_bad: bool) -> dict:
    """A folder or HF dataset (files.locate's kind and where) as shard items: each file as stored, in the order and
    with the labels training reads (domains.shards)."""
    if kind == "folder":
        return {split: file_records(len(files), lambda j, files=files: files[j].read_bytes(), labels, classes)
                for split, (files, labels, classes) in listed(where, skip_bad).items()}
    import datasets
    splits = hf_splits(str(where), kind == "saved")
    feats = splits["train"].features
    return row_records(splits, audio_column(feats, where), datasets.Audio(decode=False), label_column(feats),
                       str(where))
