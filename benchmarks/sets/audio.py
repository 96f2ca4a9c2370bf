"""Labelled audio sets for the audio suite: the embedded default (words spoken by espeak-ng voices), spoken languages
(chatterbot-corpus sentences read by espeak-ng, both installed packages), synthetic sound events and synthetic
melodies. Each is generated offline from numpy's default_rng(0), written once as train/<class>/*.wav and
test/<class>/*.wav (16 kHz mono) under the folder it is given, and never committed."""
from functools import partial
from pathlib import Path

import numpy as np

from . import Set, sized, written

RATE = 16000
LANGUAGES = {"english": "en", "german": "de", "dutch": "nl", "spanish": "es", "italian": "it", "portuguese": "pt",
             "turkish": "tr", "ukrainian": "uk"}  # chatterbot-corpus folder -> espeak-ng voice
SENTENCES = (110, 40)  # per language, train and test: disjoint, so a test sentence is never heard in training
EVENTS = ("tone", "up_chirp", "down_chirp", "band_noise", "clicks", "am_tone", "harmonics", "fm_warble")
CONTOURS = ("up", "down", "up_down", "down_up", "flat")


def write_folder(root: Path, classes, counts: dict, clip, scale: float):
    """counts: split -> clips per class at full size; clip(cls, split, i, rng) -> float waveform in [-1, 1]."""
    import soundfile as sf
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # short clips: intra-op threads cost more than they save (as in espeak.py)
    try:
        rng = np.random.default_rng(0)
        for split, n in counts.items():
            for c in classes:
                (root / split / c).mkdir(parents=True, exist_ok=True)
                for i in range(sized(n, scale, least=2)):
                    wave = np.clip(clip(c, split, i, rng), -1, 1)  # soundfile would wrap, not clip, past full scale
                    sf.write(root / split / c / f"{i:04d}.wav", wave, RATE, subtype="PCM_16")
    finally:
        torch.set_num_threads(threads)


def prepared(write):
    return lambda root, scale: [f"data.path={written(Path(root), partial(write, scale=scale))}"]


def sentences(language: str) -> list[str]:
    """The corpus's distinct lines of 20-80 characters (long enough to hold speech over the clip), sorted."""
    import yaml
    from chatterbot_corpus.corpus import DATA_DIRECTORY
    lines = set()
    for f in sorted(Path(DATA_DIRECTORY, language).glob("*.yml")):
        for talk in yaml.safe_load(f.read_text(encoding="utf-8")).get("conversations") or []:
            lines.update(t.strip() for t in talk if isinstance(t, str))
    return sorted(t for t in lines if 20 <= len(t) <= 80)


def spoken(text: str, voice: str, rate: int, pitch: int, n: int) -> np.ndarray:
    """espeak.synthesize at the domain's rate, centre-cropped or padded to n samples (espeak.py keeps its own
    fitting private: this is the smallest wrapper over what it exposes)."""
    import torch
    from multissl.domains import espeak
    from multissl.domains.audio.sources import resample
    from multissl.domains.audio.spectrogram import fit_length
    w = resample(torch.from_numpy(espeak.synthesize(text, voice, rate, pitch)), espeak.NATIVE_RATE, RATE)
    return fit_length(w, n).numpy()


def write_languages(root: Path, scale: float):
    from multissl.domains import espeak
    rng = np.random.default_rng(0)
    lines = {}
    for lang in LANGUAGES:
        pool = rng.permutation(sentences(lang))[:sum(SENTENCES)]
        lines[lang] = {"train": pool[:SENTENCES[0]], "test": pool[SENTENCES[0]:]}
    variants = {"train": espeak.VARIANTS, "test": espeak.TEST_VARIANTS}  # test timbres never heard in training

    def clip(lang, split, i, rng):
        voice = f"{LANGUAGES[lang]}+{rng.choice(variants[split])}"
        said = lines[lang][split][i % len(lines[lang][split])]
        return spoken(said, voice, int(rng.integers(120, 221)), int(rng.integers(25, 81)), round(1.5 * RATE))
    write_folder(root, LANGUAGES, {"train": 400, "test": 100}, clip, scale)


def ramped(x: np.ndarray, rng) -> np.ndarray:
    """Hann-shaped attack and release (no click at the edges, which would be a cue shared by every class)."""
    k = min(len(x) // 2, int(rng.uniform(0.005, 0.03) * RATE))
    edge = np.hanning(2 * k)
    x[:k] *= edge[:k]
    x[len(x) - k:] *= edge[k:]
    return x


def swept(freq: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * np.cumsum(freq) / RATE)  # phase from the instantaneous frequency: no jumps


def event(kind: str, n: int, rng) -> np.ndarray:
    """One event of `kind`, n samples, its parameters drawn at random."""
    t = np.arange(n) / RATE
    f = 2 ** rng.uniform(np.log2(250), np.log2(3000))
    octaves = rng.uniform(1, 2.5)  # a chirp sweeps at least an octave: not a tone
    if kind == "tone":
        return swept(np.full(n, f))
    if kind in ("up_chirp", "down_chirp"):
        sweep = f / 2 ** (octaves / 2) * 2 ** (octaves * t / t[-1])
        return swept(sweep if kind == "up_chirp" else sweep[::-1])
    if kind == "band_noise":  # white noise, its spectrum cut outside half an octave or more around f
        bins = np.fft.rfftfreq(n, 1 / RATE)
        band = (bins >= f / 2 ** (octaves / 4)) & (bins <= f * 2 ** (octaves / 4))
        return np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * band, n)
    if kind == "clicks":
        x = np.zeros(n)
        x[::int(RATE / rng.uniform(8, 40))] = 1
        return np.convolve(x, np.exp(-np.arange(64) / rng.uniform(4, 16)))[:n]
    if kind == "am_tone":
        return swept(np.full(n, f)) * (1 + rng.uniform(0.6, 1) * np.sin(2 * np.pi * rng.uniform(4, 30) * t)) / 2
    if kind == "harmonics":
        f0, k = rng.uniform(100, 400), rng.integers(4, 11)
        return sum(swept(np.full(n, f0 * h)) / h ** rng.uniform(0.5, 1.5) for h in range(1, k + 1))
    wobble = rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * rng.uniform(3, 12) * t)  # fm_warble: octaves around f
    return swept(f * 2 ** wobble)


def noisy(x: np.ndarray, snr_db: float, rng) -> np.ndarray:
    """x with white or brown-ish background noise at snr_db (against x's power where it sounds), peak-scaled to a
    random level."""
    noise = rng.standard_normal(len(x))
    if rng.random() < 0.5:
        noise = np.cumsum(noise) - np.convolve(np.cumsum(noise), np.ones(200) / 200, "same")  # drop the drift
    noise *= np.sqrt(np.mean(x[x != 0] ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    y = x + noise
    return y * rng.uniform(0.3, 0.9) / np.abs(y).max()


def write_events(root: Path, scale: float):
    def clip(kind, split, i, rng):
        n = int(rng.uniform(0.15, 0.6) * RATE)
        at = rng.integers(0, RATE - n)
        x = np.zeros(RATE)
        x[at:at + n] = ramped(event(kind, n, rng), rng)
        return noisy(x, rng.uniform(0, 20), rng)
    write_folder(root, EVENTS, {"train": 400, "test": 100}, clip, scale)


def melody(contour: str, rng) -> np.ndarray:
    """4-6 notes in a 1 s clip: random centre pitch, steps, tempo, onset and timbre (harmonics, decay). The notes are
    centred on the drawn pitch, so the contour shows in their order, not in how high they sit."""
    notes = int(rng.integers(4, 7))
    first = np.arange(notes - 1) < rng.integers(1, notes - 1)  # up_down, down_up: at least one step each way
    sign = {"up": 1, "down": -1, "flat": 0, "up_down": np.where(first, 1, -1), "down_up": np.where(first, -1, 1)}
    rise = np.concatenate([[0], np.cumsum(sign[contour] * rng.integers(1, 5, notes - 1))])  # steps of 1-4 semitones
    pitch = rng.uniform(55, 79) + rise - rise.mean()
    length = int(rng.uniform(0.6, 0.95) * RATE) // notes
    rolloff, decay = rng.uniform(0.5, 2), rng.uniform(4, 15)
    t = np.arange(length) / RATE
    out, at = np.zeros(RATE), rng.integers(0, RATE - notes * length + 1)
    for j, p in enumerate(pitch):
        f = 440 * 2 ** ((p - 69) / 12)
        tone = sum(np.sin(2 * np.pi * h * f * t) / h ** rolloff for h in range(1, 6) if h * f < RATE / 2)
        out[at + j * length:at + (j + 1) * length] = ramped(tone * np.exp(-decay * t), rng)
    return out


def write_contours(root: Path, scale: float):
    write_folder(root, CONTOURS, {"train": 600, "test": 160},
                 lambda c, split, i, rng: noisy(melody(c, rng), rng.uniform(10, 30), rng), scale)


SETS = {
    "words": Set(about="the default: 20 English words said by 60 espeak-ng voices, 1 s clips, 960 train / 240 test; "
                       "label: the word (the test speakers are never heard in training)",
                 prepare=lambda root, scale: []),
    "languages": Set(about="chatterbot-corpus sentences in 8 languages read by espeak-ng voices at random rate and "
                           "pitch, 1.5 s clips, 3200 train / 800 test; label: the language (test: other sentences, "
                           "voice variants never heard in training)", prepare=prepared(write_languages)),
    "events": Set(about="synthetic sound events of 8 kinds (tone, chirps, band noise, clicks, AM, harmonics, FM "
                        "warble), random parameters, onset and length, in noise at 0-20 dB SNR, 1 s clips, "
                        "3200 train / 800 test; label: the kind", prepare=prepared(write_events)),
    "contours": Set(about="synthetic melodies of 4-6 notes (random centre pitch, steps, tempo, timbre) in noise, 1 s "
                          "clips, 3000 train / 800 test; label: the pitch contour (up, down, up_down, down_up, flat), "
                          "an order in time", prepare=prepared(write_contours)),
}
