"""Data at the sizes users bring, generated offline and cached (never committed): a 224 x 224 RGB JPEG folder,
10-second 16 kHz clips, 84 x 84 x 4 Atari-style frame stacks, a 50-column mixed table, a corpus of 128-token
documents, 32-frame 112 x 112 RGB clips. The content is synthetic (smooth random images, tones in noise, moving
blobs, Zipf-distributed made-up words): what is measured is throughput, not accuracy.

    SIZES[domain]["real"](n_scale) -> the overrides that point a run at that data"""
from pathlib import Path

import numpy as np

from multissl.domains.cache import default_cache_dir, save_npz


def _root(kind: str, scale: float) -> Path:
    return default_cache_dir() / "bench" / f"{kind}-{scale:g}"


def _class_folder(kind: str, scale: float, n: int, classes: tuple, write) -> Path:
    """root/train/<class>/ holding n samples, class i % len(classes), written once by write(path_stem, i, rng)
    (a .done marker says the folder is complete)."""
    root = _root(kind, scale)
    if not (root / ".done").exists():
        rng = np.random.default_rng(0)
        for i in range(n):
            d = root / "train" / classes[i % len(classes)]
            d.mkdir(parents=True, exist_ok=True)
            write(d / f"{i:05d}", i, rng)
        (root / ".done").touch()
    return root


def image_folder(scale: float = 1.0) -> Path:
    """train/{a,b}/*.jpg: 256 x scale images 224 x 224 RGB (upsampled random fields, JPEG quality 90)."""
    from PIL import Image

    def write(stem, i, rng):
        small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        Image.fromarray(small).resize((224, 224), Image.BICUBIC).save(stem.with_suffix(".jpg"), quality=90)
    return _class_folder("image224", scale, max(8, int(256 * scale)), ("a", "b"), write)


def audio_folder(scale: float = 1.0) -> Path:
    """train/{high,low}/*.wav: 32 x scale clips of 10 s at 16 kHz (a tone in noise)."""
    import soundfile as sf
    t = np.arange(160000) / 16000

    def write(stem, i, rng):
        f = (300 if i % 2 else 2000) * (1 + 0.1 * rng.random())
        wave = 0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(stem.with_suffix(".wav"), wave.astype(np.float32), 16000)
    return _class_folder("audio10s", scale, max(4, int(32 * scale)), ("high", "low"), write)


def atari_buffer(scale: float = 1.0) -> Path:
    """A buffer of 2,000 x scale steps of [4 84 84] uint8 stacks (blobs moving across frames), 200-step episodes."""
    path = _root("atari84", scale) / "buffer.npz"
    if not path.exists():
        n = max(64, int(2000 * scale))
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:84, :84]
        centre = np.cumsum(rng.normal(0, 2, (n + 3, 2)), 0) % 84
        frames = (255 * np.exp(-((yy - centre[:, :1, None]) ** 2 + (xx - centre[:, 1:, None]) ** 2) / 50))
        frames = frames.astype(np.uint8)  # [n+3 84 84]
        obs = np.stack([frames[i:i + 4] for i in range(n)])  # [n 4 84 84]
        ends = np.zeros(n, bool)
        ends[199::200] = True
        save_npz(path, {"obs": obs, "action": rng.integers(0, 4, n), "reward": np.zeros(n, np.float32),
                        "terminated": ends, "truncated": np.zeros(n, bool), "state": centre[:n].astype(np.float32),
                        "state_names": np.array(["y", "x"])})
    return path


def table(scale: float = 1.0) -> Path:
    """A CSV of 5,000 x scale rows: 40 numeric columns (5 % missing), 10 categorical (3 to 200 values), a target."""
    import pandas as pd
    path = _root("table50", scale) / "table.csv"
    if not path.exists():
        n = max(64, int(5000 * scale))
        rng = np.random.default_rng(0)
        cols = {}
        for j in range(40):
            v = rng.normal(j, 1 + j % 5, n)
            v[rng.random(n) < 0.05] = np.nan
            cols[f"num{j}"] = v
        for j in range(10):
            k = [3, 5, 10, 20, 50, 100, 200, 7, 12, 30][j]
            cols[f"cat{j}"] = np.array([f"c{c}" for c in rng.integers(0, k, n)], dtype=object)
        cols["target"] = np.where(np.nan_to_num(cols["num0"]) + rng.normal(0, 1, n) > 0, "yes", "no")
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(cols).to_csv(path, index=False)
    return path


def corpus(scale: float = 1.0) -> Path:
    """A .txt of 20,000 x scale documents, one per line: 60 to 140 words drawn Zipf-like from 5,000 made-up ones."""
    path = _root("text128", scale) / "corpus.txt"
    if not path.exists():
        rng = np.random.default_rng(0)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        words = ["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(5000)]
        p = 1 / np.arange(1, 5001)
        lines = [" ".join(words[j] for j in rng.choice(5000, rng.integers(60, 141), p=p / p.sum()))
                 for _ in range(max(64, int(20000 * scale)))]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return path


def clips(scale: float = 1.0) -> Path:
    """An .npz of 64 x scale clips, uint8 [32 112 112 3]: blocky random fields drifting a pixel or so a frame."""
    path = _root("video112", scale) / "clips.npz"
    if not path.exists():
        n = max(4, int(64 * scale))
        rng = np.random.default_rng(0)
        video = np.empty((n, 32, 112, 112, 3), np.uint8)
        for i in range(n):
            field = np.kron(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8), np.ones((16, 16, 1), np.uint8))
            dy, dx = rng.integers(-3, 4, 2)
            for t in range(32):  # [224 224 3] field, a 112 x 112 window moving (dy, dx) every two frames
                y, x = 56 + dy * t // 2, 56 + dx * t // 2
                video[i, t] = field[y:y + 112, x:x + 112]
        save_npz(path, {"video": video, "label": np.arange(n) % 2})
    return path


# per domain and size: the overrides (a function of the data's scale, so a smoke test can make it small)
SIZES = {
    "image": {"default": lambda s: [],
              "real": lambda s: [f"data.path={image_folder(s)}", "data.batch_size=64"]},
    "audio": {"default": lambda s: [],
              "real": lambda s: [f"data.path={audio_folder(s)}", "domain.clip_seconds=10.0", "data.batch_size=64"]},
    "rl": {"default": lambda s: [],
           "real": lambda s: [f"data.path={atari_buffer(s)}"]},
    "tabular": {"default": lambda s: [],
                "real": lambda s: [f"data.path={table(s)}", "data.target=target"]},
    "text": {"default": lambda s: [],
             "real": lambda s: [f"data.path={corpus(s)}", "domain.max_length=128"]},
    "video": {"default": lambda s: [],
              "real": lambda s: [f"data.path={clips(s)}", "domain.frames=16", "domain.stride=2", "data.batch_size=32"]},
}
