"""The replay-buffer format of the rl domain (README: RL) and the embedded default buffer.

A buffer is one .npz file with one entry per step in each array: obs, action, reward, terminated, truncated
(the step ended its episode: a terminal state or a time limit), optionally episode ids, the true `state` [N S]
and `state_names`, and `env_config` (JSON: what `collect.make_env` rebuilds the env from). Observations are
stored in one of these layouts:

    vector  [D]          float state vectors
    hw      [H W]        one grayscale frame
    hwc     [H W C]      frames as gymnasium renders them
    chw     [K H W]      Atari-style frame stacks (or CHW)
    khwc    [K H W C]    stacks of colour frames"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from multissl.errors import UserError, reason

from ..cache import default_cache_dir

REQUIRED = ("obs", "action", "reward", "terminated", "truncated")
LAYOUTS = ("vector", "hw", "hwc", "chw", "khwc")
NDIM = {"vector": 1, "hw": 2, "hwc": 3, "chw": 3, "khwc": 4}
FORMAT_HELP = "the format needs obs, action, reward, terminated, truncated (README: RL)"
DEFAULT_BUFFER = {"env": "CartPole-v1", "steps": 10000, "seed": 0, "size": [48, 72], "grayscale": True,
                  "frame_stack": 3, "frame_skip": 1}  # multissl.collect settings, as in configs/domain/rl.yaml
FORMAT = 3  # of the cached default buffer: bump when collection changes, so an old cache is not reused


def detect_layout(shape: tuple) -> str:
    """The layout of one observation of `shape` (module docstring); a channel axis holds at most 4 (colour)
    or 16 (a frame stack) entries, and frames are larger than that."""
    if len(shape) == 1:
        return "vector"
    if len(shape) == 2:
        return "hw"
    if len(shape) == 3 and shape[-1] <= 4 < min(shape[0], shape[1]):
        return "hwc"
    if len(shape) == 3 and shape[0] <= 16 < min(shape[1], shape[2]):
        return "chw"
    if len(shape) == 4 and shape[-1] <= 4 and shape[0] <= 16 < min(shape[1], shape[2]):
        return "khwc"
    raise UserError(f"cannot tell the layout of observations shaped {list(shape)}; set domain.layout= to one of "
                    f"{', '.join(LAYOUTS)} (README: RL)")


def episode_bounds(terminated: np.ndarray, truncated: np.ndarray, episode: np.ndarray | None):
    """Per step: (segment id, first step, last step) of its episode. An episode ends after a step that is
    terminated or truncated, where the `episode` id changes, and at the end of the buffer."""
    n = len(terminated)
    start = np.zeros(n, bool)
    start[0] = True
    start[1:] = terminated[:-1] | truncated[:-1]
    if episode is not None:
        start[1:] |= episode[1:] != episode[:-1]
    seg = np.cumsum(start) - 1  # [n] 0..E-1
    firsts = np.flatnonzero(start)
    lasts = np.append(firsts[1:] - 1, n - 1)
    return seg, firsts[seg], lasts[seg]


def read_buffer(path: Path) -> dict:
    """A .npz replay buffer -> dict of numpy arrays, every array checked for presence and length."""
    if path.suffix.lower() != ".npz":
        raise UserError(f"{path} is not a replay buffer (.npz with {', '.join(REQUIRED)}); write one with "
                        f"numpy.savez or python -m multissl.collect")
    try:
        with np.load(path, allow_pickle=False) as z:
            buf = {k: z[k] for k in z.files}
    except Exception as e:
        raise UserError(f"cannot read replay buffer {path}: {reason(e)}; write it again with numpy.savez (plain "
                        f"arrays, no Python objects)") from None
    missing = [k for k in REQUIRED if k not in buf]
    if missing:
        raise UserError(f"replay buffer {path} has no {missing[0]!r} array (it has: {', '.join(sorted(buf)) or 'none'})"
                        f"; {FORMAT_HELP}")
    n = len(buf["obs"]) if buf["obs"].ndim else 0
    if n == 0:
        raise UserError(f"replay buffer {path} is empty (obs holds 0 steps); collect some steps into it")
    for k in (*REQUIRED[1:], "state", "episode"):
        if k in buf and (buf[k].ndim == 0 or len(buf[k]) != n):
            got = len(buf[k]) if buf[k].ndim else "no"
            raise UserError(f"replay buffer {path}: {k!r} has {got} steps but 'obs' has {n}; every array needs one "
                            f"entry per step")
    for k in ("terminated", "truncated"):
        v = buf[k]
        if v.dtype != bool and not np.isin(v, (0, 1)).all():
            raise UserError(f"replay buffer {path}: {k!r} must be booleans (or 0/1), one per step; it holds "
                            f"{v[~np.isin(v, (0, 1))].flat[0]!r}")
        buf[k] = v.astype(bool)
    if not np.issubdtype(buf["obs"].dtype, np.number):
        raise UserError(f"replay buffer {path}: obs has dtype {buf['obs'].dtype}; observations must be numbers "
                        f"(uint8 frames or float vectors)")
    for k in ("obs", "state"):
        if k in buf and np.issubdtype(buf[k].dtype, np.floating) and not np.isfinite(buf[k]).all():
            bad = int(np.flatnonzero(~np.isfinite(buf[k]).reshape(n, -1).all(1))[0])
            raise UserError(f"replay buffer {path}: {k!r} holds NaN or Inf (first at step {bad}); clean those steps "
                            f"or drop them from the buffer")
    if "state" in buf:
        buf["state"] = buf["state"].reshape(n, -1).astype(np.float32)
    return buf


class Steps(torch.utils.data.Dataset):
    """The steps of one split: item i -> {"x": its index in the buffer (0-d int64), "y": -1}."""

    def __init__(self, index: np.ndarray):
        self.index = torch.from_numpy(np.asarray(index, np.int64))

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        return {"x": self.index[i], "y": -1}


def default_buffer(settings: dict, cache_dir: str | None = None) -> dict:
    """The embedded default: the buffer `collect` writes with `settings` (DEFAULT_BUFFER's keys), collected
    once and cached in cache_dir (None = the multissl cache); a damaged cache file is collected again."""
    import gymnasium

    from .collect import collect, env_config
    settings = dict(settings)
    env, steps, seed = settings.pop("env"), int(settings.pop("steps")), int(settings.pop("seed"))
    # gymnasium's version is in the key: its renderer and physics decide what the frames hold
    key = json.dumps([FORMAT, env, steps, seed, env_config(env, **settings), gymnasium.__version__])
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "rl"
    path = root / f"{env.replace('/', '_')}_{steps}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        try:
            return read_buffer(path)
        except UserError as e:
            print(f"multissl: warning: collecting the default buffer again: {e}", file=sys.stderr)
    print(f"multissl: collecting the default {env} buffer once ({steps} random-policy steps, pixels) into "
          f"{path}", file=sys.stderr)
    collect(env, steps, out=path, seed=seed, **settings)
    return read_buffer(path)
