"""The audio domain's embedded default data: spoken words synthesized offline with espeak-ng.

espeak-ng comes from the `espeakng-loader` wheel and is driven through its C API with ctypes. A speaker is an
English accent + a voice variant (its own timbre) + its own speaking rate and pitch."""
import _ctypes
import atexit
import ctypes
import hashlib
import json
import logging
import random
import shutil
import sys
import tempfile
import threading
from importlib.metadata import version
from pathlib import Path

import numpy as np

from .cache import one_maker, save_npz

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
NATIVE_RATE = 22050
FORMAT = 1  # bump when the generation below changes, so old caches are not reused

# English accents in the bundled espeak-ng-data (lang/gmw) and voice variants (voices/!v) that sound human and
# distinct. Left out: robot, whisper and echo variants, near-duplicates of a test variant (aunty~f4, linda~belinda),
# and variants with breath noise (f2, f3, f5, ...): espeak draws that noise from libc rand(), so not reproducibly.
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m6", "m7", "m8", "grandpa", "klatt3",
            "f1", "f4", "steph", "grandma", "anika", "Andrea", "shelby", "zac")
TEST_VARIANTS = ("m4", "travis", "Annie", "belinda")  # timbres never heard in training: held-out speakers
PER_VARIANT = 3  # accents per variant: 20 variants x 3 = 60 speakers, 12 of them test

# speak_lib.h
_SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS: espeak_Synth returns once all audio went through the callback
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()  # espeak is one global state machine, not thread-safe
_chunks: list[np.ndarray] = []
_private_lib: Path | None = None
log = logging.getLogger(__name__)


def _collect(wav, n, events) -> int:
    if wav and n > 0:
        _chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())  # espeak reuses its buffer
    return 0  # 0 = continue synthesis


_callback = _CALLBACK(_collect)  # module-level: C keeps the pointer, so Python must keep the object alive


def _data_path() -> Path:
    import espeakng_loader
    return Path(espeakng_loader.get_data_path())


def _open_espeak():
    """espeak keeps synthesis state in C statics that no API resets (pitch-flutter phase, roughness cycle
    count), so the same call yields slightly different audio each time. Loading a private copy of the library
    afresh per utterance (~2 ms) makes synthesis deterministic and never disturbs another espeak user here."""
    global _private_lib
    if _private_lib is None:
        import espeakng_loader
        src = Path(espeakng_loader.get_library_path())
        tmp = Path(tempfile.mkdtemp(prefix="multissl-espeak-"))
        atexit.register(shutil.rmtree, tmp, True)
        _private_lib = Path(shutil.copy(src, tmp / src.name))
    lib = ctypes.CDLL(str(_private_lib))
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, str(_data_path()).encode(), 0)
    if rate != NATIVE_RATE:
        _close_espeak(lib)
        raise RuntimeError(f"espeak-ng failed to initialize (returned {rate}) with data in {_data_path()}")
    lib.espeak_SetSynthCallback(_callback)
    return lib


def _close_espeak(lib):
    lib.espeak_Terminate()  # frees espeak's buffers; unloading then drops its static state
    (getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary)(lib._handle)


def synthesize(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    """float32 mono waveform in [-1, 1] at NATIVE_RATE. voice: "<accent>[+<variant>]"; rate in words per
    minute (80..450); pitch 0..99 (50 = the voice's normal)."""
    variant = voice.partition("+")[2]
    if variant and not (_data_path() / "voices" / "!v" / variant).is_file():  # espeak silently ignores these
        raise ValueError(f"espeak-ng has no voice variant {variant!r} (in {voice!r}); the variants are the "
                         f"files in {_data_path() / 'voices' / '!v'}")
    with _lock:
        lib = _open_espeak()
        try:
            if (err := lib.espeak_SetVoiceByName(voice.encode())) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r} (error {err}); use a language file name "
                                 f"under {_data_path() / 'lang'}, e.g. 'en-us', optionally with '+<variant>'")
            lib.espeak_SetParameter(_RATE, int(rate), 0)
            lib.espeak_SetParameter(_PITCH, int(pitch), 0)
            data = text.encode()
            if (err := lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)) != 0:
                raise RuntimeError(f"espeak-ng failed to synthesize {text!r} with {voice!r} (error {err})")
            wav = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        finally:
            _chunks.clear()
            _close_espeak(lib)
    if not np.any(wav):
        raise RuntimeError(f"espeak-ng produced no audio for {text!r} with voice {voice!r}")
    return wav.astype(np.float32) / 32768


def speakers() -> list[dict]:
    """Each variant speaks with PER_VARIANT different accents, each at its own rate and pitch. Accents are dealt
    from a shuffled cycle so all are used about equally. Test speakers are exactly the TEST_VARIANTS' ones."""
    rng = random.Random(20250)  # own generator: independent of the global random state
    order = rng.sample(ACCENTS, len(ACCENTS))
    out = []
    for variant in VARIANTS + TEST_VARIANTS:
        for _ in range(PER_VARIANT):
            out.append({"voice": f"{order[len(out) % len(order)]}+{variant}", "rate": rng.randint(120, 220),
                        "pitch": rng.randint(25, 80), "test": variant in TEST_VARIANTS})
    return out


def _fit(wav: np.ndarray, sample_rate: int, n: int) -> np.ndarray:
    """Trim near-silence (below -40 dB of the peak), resample, then centre: zero-pad or centre-crop to n."""
    import torch

    from .audio import resample
    loud = np.flatnonzero(np.abs(wav) > 0.01 * np.abs(wav).max())
    wav = resample(torch.from_numpy(wav[loud[0]:loud[-1] + 1]), NATIVE_RATE, sample_rate)
    out = torch.zeros(n)
    if len(wav) <= n:
        out[(n - len(wav)) // 2:][:len(wav)] = wav
    else:
        out[:] = wav[(len(wav) - n) // 2:][:n]
    return (out * 32767).round().clamp(-32768, 32767).to(torch.int16).numpy()


def spoken_words(cache_dir: str | Path, sample_rate: int = 16000, seconds: float = 1.0) -> dict:
    """Every speaker saying every word, generated once and cached as an .npz in cache_dir. Returns "wave" int16
    [n, round(sample_rate*seconds)], "word" int64 [n] (index into WORDS), "speaker" int64 [n] (index into
    speakers()), "test" bool [n] (a held-out speaker)."""
    spk, n = speakers(), round(sample_rate * seconds)
    key = json.dumps([FORMAT, WORDS, spk, sample_rate, n, version("espeakng-loader")])  # n: 1 s == 1.0 s
    cache_dir = Path(cache_dir)
    path = cache_dir / f"spoken_words_{sample_rate}hz_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    d = _read(path, (len(spk) * len(WORDS), n))
    if d is not None:
        return d
    with one_maker(path):  # another process making it now: wait and read theirs
        return _read(path, (len(spk) * len(WORDS), n)) or _make(path, spk, sample_rate, n)


def _read(path: Path, shape: tuple) -> dict | None:
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            d = {k: z[k] for k in ("wave", "word", "speaker", "test")}
        if d["wave"].shape == shape:
            return d
    except Exception as e:  # a damaged file is just a cache miss
        log.warning("regenerating unreadable cache %s (%s)", path, e)
    path.unlink(missing_ok=True)
    return None


def _make(path: Path, spk: list[dict], sample_rate: int, n: int) -> dict:
    print(f"multissl: synthesizing the default spoken-word set once ({len(spk) * len(WORDS)} clips) into {path}",
          file=sys.stderr)
    import torch
    pairs = [(s, w) for s in range(len(spk)) for w in range(len(WORDS))]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one-second clips: intra-op threads cost more than they save (~7x on 2 busy cores)
    try:
        wave = np.stack([_fit(synthesize(WORDS[w], spk[s]["voice"], spk[s]["rate"], spk[s]["pitch"]), sample_rate, n)
                         for s, w in pairs])
    finally:
        torch.set_num_threads(threads)
    d = {"wave": wave,
         "word": np.array([w for _, w in pairs], np.int64), "speaker": np.array([s for s, _ in pairs], np.int64),
         "test": np.array([spk[s]["test"] for s, _ in pairs], bool)}
    save_npz(path, d)
    with np.load(path) as z:  # the set published first, if another process synthesized it at the same time
        return {k: z[k] for k in ("wave", "word", "speaker", "test")}
