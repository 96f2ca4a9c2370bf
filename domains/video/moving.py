"""The embedded default: moving digits. scikit-learn's 8 x 8 digits, upscaled, each moving at constant speed in one of
8 directions inside a larger frame and bouncing off its borders. Two labels: the digit (appearance) and the direction
(motion). Deterministic (its own seed, not the run's), generated in about a second and cached."""
import numpy as np

from ..cache import one_maker, save_npz

# unit steps of the 8 directions, counter-clockwise from east: E, NE, N, NW, W, SW, S, SE (rows grow downwards)
DIRECTIONS = [(0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1)]
DIRECTION_NAMES = ["E", "NE", "N", "NW", "W", "SW", "S", "SE"]


def bounce(start: float, velocity: float, steps: np.ndarray, room: int) -> np.ndarray:
    """Positions [t] of a point moving from start at velocity in [0, room], reflected at both ends."""
    if room <= 0:
        return np.zeros(len(steps))
    p = np.mod(start + velocity * steps, 2 * room)
    return np.where(p > room, 2 * room - p, p)


DEFAULT = {"n": 3000, "frames": 16, "size": 32}  # the embedded default clips (domain.default.*)


def moving_digits(n: int = 3000, frames: int = 16, size: int = 32, scale: int = 2, speed: float = 2.0,
                  seed: int = 0) -> dict:
    """{"video": uint8 [n frames 1 size size], "digit": int64 [n], "direction": int64 [n]}: digit images (every one of
    the 1797 in turn) upscaled by `scale`, a random start and one of the 8 directions each (balanced), `speed` pixels
    per frame along each moving axis."""
    from sklearn.datasets import load_digits
    d = load_digits()
    rng = np.random.default_rng(seed)
    glyphs = np.kron(d.images / 16.0, np.ones((scale, scale)))  # [1797 8s 8s] in [0, 1]
    side = glyphs.shape[1]
    room = size - side
    pick = np.arange(n) % len(glyphs)
    direction = rng.permutation(np.arange(n) % len(DIRECTIONS))
    t = np.arange(frames)
    video = np.zeros((n, frames, 1, size, size), np.uint8)
    for i in range(n):
        dy, dx = DIRECTIONS[direction[i]]
        rows = bounce(rng.uniform(0, room), dy * speed, t, room).round().astype(int)
        cols = bounce(rng.uniform(0, room), dx * speed, t, room).round().astype(int)
        g = (glyphs[pick[i]] * 255).round().astype(np.uint8)
        for k in range(frames):
            video[i, k, 0, rows[k]:rows[k] + side, cols[k]:cols[k] + side] = g
    return {"video": video, "digit": d.target[pick].astype(np.int64), "direction": direction.astype(np.int64)}


def cached(cache_dir, **settings) -> dict:
    """moving_digits(**settings), generated once and kept under cache_dir/video/ by its settings."""
    from pathlib import Path
    key = "-".join(f"{k}{v}" for k, v in sorted(settings.items()))
    path = Path(cache_dir) / "video" / f"moving-digits-{key}.npz"
    if not path.exists():
        with one_maker(path):  # another process making it now: wait and read theirs
            if not path.exists():
                save_npz(path, moving_digits(**settings))
    with np.load(path) as f:
        return {k: f[k] for k in f.files}
