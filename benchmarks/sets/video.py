"""Labelled video sets: moving objects and rendered environments.

- digits, digits-direction: the domain's embedded default (domains/video/moving.py), one run, two labels: the digit and
  the direction of motion (`knn_direction`, which the domain logs for its default data only).
- shapes-direction, shapes: shapes of random kind, colour, size, speed and start crossing a textured, noisy
  background in a straight line; labelled by the direction (8, the shape random) or the shape (4, any direction).
- control: gymnasium's classic-control envs (CartPole, Pendulum, Acrobot, MountainCar) rendered with
  render_mode="rgb_array" from random states under random actions; labelled by the env and whether its moving part
  (pole tip, bob, arm tip, car) rises or falls over the clip.

Each is generated once from installed packages (numpy and Pillow; gymnasium and pygame-ce, the rl extra, for the
renders) into an .npz of uint8 clips [N, 16, 48, 48, 3] with `label`, `test_video` and `test_label`, never committed.
The held-out clips are other draws (their own seed), every class equally often in each split.
"""
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from . import Set, sized, written

FRAMES, SIZE = 16, 48  # the domain samples 8 of the 16 frames; at 48 px its tubelets are 12 px, near the shapes' size


def npz(root: Path, scale: float, make, train: int, test: int) -> list[str]:
    """The overrides that read make(clips per class, seed) -> (video, label), a train and a test draw, written once."""
    def write(folder: Path):
        (video, label), (test_video, test_label) = (make(sized(n, scale, least=2), seed)
                                                    for n, seed in ((train, 0), (test, 1)))
        np.savez(folder / "clips.npz", video=video, label=label, test_video=test_video, test_label=test_label)
    return [f"data.path={written(root, write) / 'clips.npz'}"]


# ---- moving shapes ---------------------------------------------------------------------------------------------

ANGLES = np.arange(8) * np.pi / 4  # E, NE, N, NW, W, SW, S, SE (rows grow downwards)


def shape_mask(kind: int, side: int) -> np.ndarray:
    """A filled square, disk, triangle or cross, [side side] bool."""
    y, x = np.mgrid[:side, :side] / (side - 1) * 2 - 1  # [-1, 1]
    return [np.ones_like(x, bool), x ** 2 + y ** 2 <= 1, np.abs(x) <= (y + 1) / 2,
            (np.abs(x) < 0.35) | (np.abs(y) < 0.35)][kind]


def background(rng) -> tuple[np.ndarray, np.ndarray]:
    """A coloured texture, blocks at two scales, so that no single colour gives the shape away: (float [SIZE SIZE 3],
    its mean colour [3])."""
    mean = rng.uniform(60, 190, 3)
    coarse, fine = (np.kron(rng.uniform(-1, 1, (SIZE // k, SIZE // k, 3)), np.ones((k, k, 1))) for k in (8, 4))
    return mean + 45 * coarse + 20 * fine, mean


def moving_shape(rng, kind: int, angle: float) -> np.ndarray:
    """One clip uint8 [FRAMES SIZE SIZE 3]: the shape crosses in a straight line, never reaching a border (a bounce
    would turn it), over per-frame noise."""
    side, speed = rng.integers(8, 15), rng.uniform(0.8, 1.8)
    room, t = SIZE - side, np.arange(FRAMES)
    v = speed * np.array([-np.sin(angle), np.cos(angle)])  # rows, cols per frame
    low, high = np.maximum(0, -v * (FRAMES - 1)), np.minimum(room, room - v * (FRAMES - 1))
    where = (rng.uniform(low, high) + v * t[:, None]).round().astype(int)  # [FRAMES 2]
    back, mean = background(rng)
    video = back + rng.normal(0, 10, (FRAMES, SIZE, SIZE, 3))
    colour = mean + np.where(mean < 128, 1, -1) * rng.uniform(60, 120, 3)  # away from the background: always seen
    mask = shape_mask(kind, side)
    for k, (r, c) in enumerate(where):
        video[k, r:r + side, c:c + side][mask] = colour
    return video.clip(0, 255).astype(np.uint8)


def shapes(per_class: int, seed: int, by: str) -> tuple[np.ndarray, np.ndarray]:
    """Clips labelled `by` "direction" (8, the shape random) or "shape" (4, the direction any angle)."""
    rng = np.random.default_rng(seed)
    label = rng.permutation(np.repeat(np.arange(8 if by == "direction" else 4), per_class))
    kind = label if by == "shape" else rng.integers(0, 4, len(label))
    angle = ANGLES[label] if by == "direction" else rng.uniform(0, 2 * np.pi, len(label))
    return np.stack([moving_shape(rng, k, a) for k, a in zip(kind, angle)]), label


# ---- classic control ---------------------------------------------------------------------------------------------

# id: (settings of the unwrapped env: a smaller screen to render fast, a time step that makes the motion visible
# within a clip; a random start state; the height of its moving part; the centre share of the padded square kept)
ENVS = {
    "CartPole-v1": ({"screen_width": 300, "screen_height": 200, "tau": 0.04},
                    lambda r: r.uniform([-0.8, -1, -1.2, -2], [0.8, 1, 1.2, 2]), lambda s: np.cos(s[2]), 2 / 3),
    "Pendulum-v1": ({"screen_dim": 160, "dt": 0.03}, lambda r: r.uniform([-np.pi, -2], [np.pi, 2]),
                    lambda s: np.cos(s[0]), 0.6),
    "Acrobot-v1": ({"SCREEN_DIM": 96, "dt": 0.04}, lambda r: r.uniform([-np.pi, -np.pi, -2, -2], [np.pi, np.pi, 2, 2]),
                   lambda s: -np.cos(s[0]) - np.cos(s[0] + s[1]), 1.0),
    "MountainCar-v0": ({"screen_width": 240, "screen_height": 160}, lambda r: r.uniform([-1.2, -0.05], [0.5, 0.05]),
                       lambda s: np.sin(3 * s[0]), 1.0),
}


def square(frame: np.ndarray, keep: float) -> np.ndarray:
    """A render padded white to a square, its centre `keep` share cut out and area-resized: uint8 [SIZE SIZE 3]."""
    h, w, _ = frame.shape
    n = max(h, w)
    padded = np.full((n, n, 3), 255, np.uint8)
    padded[(n - h) // 2:(n - h) // 2 + h, (n - w) // 2:(n - w) // 2 + w] = frame
    a = round(n * (1 - keep) / 2)
    return np.asarray(Image.fromarray(padded[a:n - a, a:n - a]).resize((SIZE, SIZE), Image.BOX))


def episode(env, start, height) -> list | None:
    """States of a clip from `start` under random actions, in the order in which its height falls, when the height
    runs one way throughout and by a visible amount; None otherwise."""
    env.state, states = np.array(start, dtype=float), []
    for _ in range(FRAMES):
        states.append(np.array(env.state))
        env.step(env.action_space.sample())
    h = np.diff([height(s) for s in states])
    if abs(h.sum()) < 0.2 or not ((h > 0).all() or (h < 0).all()):
        return None
    return states[::-1] if h[0] > 0 else states


def render(env, state, keep: float) -> np.ndarray:
    """The env drawn at `state`, uint8 [SIZE SIZE 3]."""
    env.state = state
    if hasattr(env, "last_u"):  # Pendulum draws the last torque as an arrow: an action, not the motion
        env.last_u = None
    return square(env.render(), keep)


def control(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clips of every env, labelled 2 x env + (1: rising, 0: falling). Up or down rather than left or right: the views
    are flipped horizontally (domain.flip), which swaps left and right but not up and down. A rising clip is a falling
    one played backwards (frictionless envs make such motions too), so both classes show the same states at the same
    speeds and only the order of the frames tells them apart."""
    import gymnasium
    rng, videos, labels = np.random.default_rng(seed), [], []
    with warnings.catch_warnings():  # the envs warn when stepped past their end: the clips go on
        warnings.simplefilter("ignore")
        for e, (name, (settings, start, height, keep)) in enumerate(ENVS.items()):
            env = gymnasium.make(name, render_mode="rgb_array").unwrapped
            env.reset(seed=seed)
            env.action_space.seed(seed)
            vars(env).update(settings)
            for k in range(2 * per_class):
                while (states := episode(env, start(rng), height)) is None:
                    pass
                videos.append(np.stack([render(env, s, keep) for s in (states[::-1] if k % 2 else states)]))
                labels.append(2 * e + k % 2)
            env.close()
    order = rng.permutation(len(labels))
    return np.stack(videos)[order], np.array(labels)[order]


SETS = {
    "digits": Set(about="moving digits (embedded default): 8 x 8 digits upscaled, bouncing in 32 px frames, 16 frames, "
                        "2,400 / 600 clips; label: the digit (10)",
                  prepare=lambda root, scale: []),
    "digits-direction": Set(about="the moving digits; label: the direction of motion (8)",
                            prepare=lambda root, scale: [], metric="knn_direction", same_run_as="digits"),
    "shapes-direction": Set(about="coloured shapes crossing a textured noisy background, 48 px, 16 frames, 2,400 / "
                                  "800 clips; label: the direction of motion (8)",
                            prepare=lambda root, scale: npz(root, scale, lambda n, s: shapes(n, s, "direction"),
                                                            300, 100)),
    "shapes": Set(about="coloured shapes moving any way over a textured noisy background, 48 px, 16 frames, 2,400 / "
                        "800 clips; label: the shape (4)",
                  prepare=lambda root, scale: npz(root, scale, lambda n, s: shapes(n, s, "shape"), 600, 200)),
    "control": Set(about="gymnasium classic-control renders (CartPole, Pendulum, Acrobot, MountainCar), 48 px, 16 "
                         "frames, 2,400 / 800 clips; label: env x its moving part rising or falling (8)",
                   prepare=lambda root, scale: npz(root, scale, control, 300, 100)),
}
