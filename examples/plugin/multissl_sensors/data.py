"""Sensor windows: the default set, synthesized offline (accelerometer-like activities), and windows a user stores as
.npy / .npz arrays [n channels steps]. Items are {"x": float32 [c t] in the sensor's own units, "y": class id or -1}."""
from pathlib import Path

import numpy as np
import torch

from multissl.errors import UserError

RATE = 32.0  # Hz: a 128-step window is 4 s, a few strides of every activity
# activity: (step frequency in Hz, amplitude in g, share of the second harmonic); "still" is gravity and sensor noise
ACTIVITIES = {"still": (0.0, 0.0, 0.0), "walking": (1.8, 0.35, 0.3), "running": (2.8, 0.9, 0.5),
              "stairs": (1.2, 0.3, 0.8)}
AXES = np.array([0.5, 0.3, 1.0])  # how much of the stride each axis (forward, lateral, vertical) feels


class Windows(torch.utils.data.Dataset):
    """Rows `index` of windows [n c t] (a memory-mapped .npy stays on disk: a window is read when asked for)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, index: np.ndarray):
        self.x, self.y, self.index = x, y, index

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        j = int(self.index[i])
        return {"x": torch.from_numpy(np.array(self.x[j], dtype=np.float32)), "y": int(self.y[j])}


def synthesize(n: int, seed: int, steps: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """n windows float32 [n 3 steps] of the ACTIVITIES (labels [n] in their order): gravity along a randomly tilted
    vertical, plus each activity's stride at a random phase, amplitude (x0.7-1.3) and frequency (+-10 %), plus noise.
    Deterministic in `seed`; the phase is random, so only features that ignore it (a spectrum) separate the classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(ACTIVITIES), n)
    freq, amp, harmonic = (np.array(v)[y, None, None] for v in zip(*ACTIVITIES.values()))  # [n 1 1] each
    freq = freq * rng.uniform(0.9, 1.1, (n, 1, 1))
    amp = amp * rng.uniform(0.7, 1.3, (n, 1, 1))
    t = np.arange(steps) / RATE  # [t] seconds
    phase = rng.uniform(0, 2 * np.pi, (n, 3, 1)) + 2 * np.pi * freq * t  # [n 3 t]: each axis at its own phase
    stride = amp * AXES[:, None] * (np.sin(phase) + harmonic * np.sin(2 * phase + rng.uniform(0, 2 * np.pi, (n, 3, 1))))
    tilt = rng.normal(0, 0.15, (n, 3))
    gravity = tilt + np.array([0.0, 0.0, 1.0])  # [n 3]
    gravity /= np.linalg.norm(gravity, axis=1, keepdims=True)
    x = gravity[:, :, None] + stride + rng.normal(0, 0.05, (n, 3, steps))
    return x.astype(np.float32), y


def default_splits(train: int = 1200, test: int = 400) -> dict:
    """The embedded default: train and test drawn from different seeds (no window is in both)."""
    out = {}
    for split, (n, seed) in {"train": (train, 0), "test": (test, 1)}.items():
        x, y = synthesize(n, seed)
        out[split] = Windows(x, y, np.arange(n))
    return out


def read_windows(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A .npy of windows [n c t], or a .npz with "x" (windows) and optionally "y" (a label per window)."""
    p = Path(path).expanduser()
    if not p.is_file() or p.suffix not in (".npy", ".npz"):
        raise UserError(f"data.path={path} is not a .npy or .npz file; save windows [n, channels, steps] with "
                        f"numpy.save, or numpy.savez(path, x=windows, y=labels)")
    if p.suffix == ".npy":
        return np.load(p, mmap_mode="r"), None
    with np.load(p) as f:
        if "x" not in f:
            raise UserError(f"{path} holds {sorted(f.files)}, not 'x'; save it as numpy.savez(path, x=windows, "
                            f"y=labels)")
        return f["x"], f.get("y")


def file_splits(path: str, test_fraction: float) -> tuple[dict, int | None]:
    """{split: Windows} of a file, the held-out share drawn by a fixed permutation (not the run seed, so every run of
    the file holds out the same windows), and the class count (None without labels)."""
    x, y = read_windows(path)
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number) or len(x) < 2:
        raise UserError(f"{path} holds an array of shape {x.shape} ({x.dtype}); sensor windows are numbers of shape "
                        f"[n, channels, steps] with n >= 2 (add an axis for one channel: x[:, None])")
    if y is not None and len(y) != len(x):
        raise UserError(f"{path}: {len(y)} labels y for {len(x)} windows x; give one label per window")
    classes = None
    if y is None:
        y = np.full(len(x), -1)
    else:
        names, y = np.unique(y, return_inverse=True)  # any label values -> ids 0..k-1
        classes = len(names)
    perm = np.random.default_rng(0).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    parts = {"train": np.sort(perm[n_test:]), **({"test": np.sort(perm[:n_test])} if n_test else {})}
    return {s: Windows(x, y, idx) for s, idx in parts.items()}, classes
