"""The replay-buffer format of the rl domain (docs/domains/rl.md) and the embedded default buffer.

A buffer is one .npz file or a folder of .npy files, one per key (in memory: a dict of the same arrays), with one entry
per step in each array: obs, action, reward, terminated, truncated (the step ended its episode: a terminal state or a
time limit), optionally episode ids, the true `state` [N S] and `state_names`, and `env_config` (JSON: what
`collect.make_env` rebuilds the env from).
Observations are stored in one of these layouts:

    vector  [D]          float state vectors
    hw      [H W]        one grayscale frame
    hwc     [H W C]      frames as gymnasium renders them
    chw     [K H W]      Atari-style frame stacks (or CHW)
    khwc    [K H W C]    stacks of colour frames

A buffer on disk is memory-mapped (mmap.py) and never read whole: its small per-step arrays are checked in full, its
observations from their header and, for values, on an evenly spread sample of steps."""
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from multissl.errors import UserError, reason

from ..cache import default_cache_dir, one_maker
from ..memory import describe, numpy
from .mmap import FOLDER_HELP, open_folder, open_npz

REQUIRED = ("obs", "action", "reward", "terminated", "truncated")
LAYOUTS = ("vector", "hw", "hwc", "chw", "khwc")
NDIM = {"vector": 1, "hw": 2, "hwc": 3, "chw": 3, "khwc": 4}
FORMAT_HELP = "the format needs obs, action, reward, terminated, truncated (docs/domains/rl.md)"
DEFAULT_BUFFER = {"env": "CartPole-v1", "steps": 10000, "seed": 0, "size": [48, 72], "grayscale": True,
                  "frame_stack": 3, "frame_skip": 1}  # multissl.collect settings, as in configs/domain/rl.yaml
NUMBERS = "biuf"  # numpy dtype kinds that are numbers: bool, integers, floats (no complex, dates or strings)
MAX_ACTIONS = 1 << 16  # discrete action ids index an embedding table: a larger id is a label, not an action id
FORMAT = 3  # of the cached default buffer: bump when collection changes, so an old cache is not reused
SAMPLE = 4096  # observations read from a buffer on disk for statistics and value checks, evenly spread


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
                    f"{', '.join(LAYOUTS)} (docs/domains/rl.md)")


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


def action_space(action: np.ndarray) -> tuple[str, int]:
    """("discrete", n) for integer actions [N] (ids 0..n-1), else ("continuous", d): d numbers per step."""
    if np.issubdtype(action.dtype, np.integer) and action.ndim == 1:
        return "discrete", int(action.max()) + 1
    return "continuous", int(np.prod(action.shape[1:]))


def read_buffer(source, cache_dir: str | None = None) -> dict:
    """A replay buffer — a .npz file, a folder of .npy files, or in memory a dict of arrays with its keys
    (`memory_arrays`) -> dict of numpy arrays, every array checked for presence, length, dtype and range. On disk the
    arrays are memory-mapped (`mmap.Mapped`); a .npz is copied once into a folder of .npy under cache_dir (None = the
    multissl cache, `cache_root`)."""
    if isinstance(source, Mapping):
        buf, where = memory_arrays(source), "the replay buffer in data.path"
    elif isinstance(source, (str, os.PathLike)):
        buf, where = open_buffer(Path(source).expanduser(), cache_dir), f"replay buffer {source}"
    else:
        raise UserError(f"data.path holds {describe(source)}; the rl domain reads {MEMORY}")
    missing = [k for k in REQUIRED if k not in buf]
    if missing:
        raise UserError(f"{where} has no {missing[0]!r} array (it has: {', '.join(sorted(buf)) or 'none'})"
                        f"; {FORMAT_HELP}")
    n = len(buf["obs"]) if buf["obs"].ndim else 0
    if n == 0:
        raise UserError(f"{where} is empty (obs holds 0 steps); collect some steps into it")
    for k in (*REQUIRED[1:], "state", "episode"):
        if k in buf and (buf[k].ndim == 0 or len(buf[k]) != n):
            got = len(buf[k]) if buf[k].ndim else "no"
            raise UserError(f"{where}: {k!r} has {got} steps but 'obs' has {n}; every array needs one "
                            f"entry per step")
    for k in ("terminated", "truncated"):
        v = one_per_step(buf[k], k, where)
        if v.dtype != bool and not (v.dtype.kind in NUMBERS and np.isin(v, (0, 1)).all()):
            bad = v[~np.isin(v, (0, 1))] if v.dtype.kind in NUMBERS else v
            raise UserError(f"{where}: {k!r} must be booleans (or 0/1), one per step; it holds {holds(bad)}: save it "
                            f"as a bool array (True where the episode ended after that step)")
        buf[k] = v.astype(bool)
    check_actions(buf["action"], where)
    check_numbers(one_per_step(buf["reward"], "reward", where), "reward", where, "rewards")
    if "episode" in buf:
        buf["episode"] = episode_ids(one_per_step(buf["episode"], "episode", where), where)
    if not np.issubdtype(buf["obs"].dtype, np.number):
        raise UserError(f"{where}: obs has dtype {buf['obs'].dtype}; observations must be numbers "
                        f"(uint8 frames or float vectors)")
    if "state" in buf and buf["state"].dtype.kind not in NUMBERS:
        raise UserError(f"{where}: 'state' holds {holds(buf['state'])}; the true state must be numbers (float "
                        f"vectors, one per step): convert it, or leave it out (it is only used for evaluation)")
    for k in [k for k in ("obs", "state") if k in buf and np.issubdtype(buf[k].dtype, np.floating)]:
        rows = evenly_spread(n) if k == "obs" and isinstance(buf[k], np.memmap) else slice(None)  # on disk: a sample
        v = buf[k][rows]
        if not np.isfinite(v).all():
            bad = int(np.arange(n)[rows][np.flatnonzero(~np.isfinite(v).reshape(len(v), -1).all(1))[0]])
            raise UserError(f"{where}: {k!r} holds NaN or Inf (first at step {bad}); clean those steps "
                            f"or drop them from the buffer")
    if "state" in buf:
        buf["state"] = buf["state"].reshape(n, -1).astype(np.float32)
    return buf


MEMORY = ("a replay buffer: a .npz file, a folder of .npy files, or a dict of arrays with its keys (obs, action, "
          "reward, terminated, truncated, optionally episode, state, state_names, env_config)")


def cache_root(cache_dir: str | None) -> Path:
    """Where the rl domain caches the default buffer and the memory-mappable copies of .npz buffers."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "rl"


def open_buffer(path: Path, cache_dir: str | None) -> dict:
    """A buffer on disk, memory-mapped: a folder of .npy as it is, a .npz through its copy in the cache."""
    if path.is_dir():
        return open_folder(path, f"replay buffer {path}")
    if path.suffix.lower() == ".npy":
        raise UserError(f"{path} holds one array; a replay buffer is a .npz or {FOLDER_HELP}, with "
                        f"{', '.join(REQUIRED)}: point data.path at the folder")
    if path.suffix.lower() != ".npz":
        raise UserError(f"{path} is not a replay buffer (.npz or {FOLDER_HELP}, with {', '.join(REQUIRED)}); write "
                        f"one with numpy.savez or python -m multissl.collect")
    return open_npz(path, cache_root(cache_dir) / "mapped")


def evenly_spread(n: int, most: int = SAMPLE) -> np.ndarray:
    """Up to `most` indices of 0..n-1, evenly spread, in order (rows read from a memmap are read alone)."""
    return np.linspace(0, n - 1, min(n, most)).astype(int)


def memory_arrays(d: Mapping) -> dict:
    """A dict of arrays, tensors or lists (env_config may be a dict) -> numpy arrays as a .npz holds them, no copy;
    an entry that is no array of numbers or strings is refused, as in a file."""
    buf = {}
    for k, v in d.items():
        v = json.dumps(v) if k == "env_config" and isinstance(v, dict) else v
        try:
            a = numpy(v)
        except ValueError as e:  # ragged nested lists
            raise UserError(f"the replay buffer in data.path: {k!r} is not an array ({reason(e)}); give one array per "
                            f"key, one entry per step") from None
        if a.dtype == object:
            raise UserError(f"the replay buffer in data.path: {k!r} holds Python objects ({describe(v)}); give arrays "
                            f"of numbers (strings for state_names and env_config)")
        buf[str(k)] = a
    return buf


def holds(v: np.ndarray) -> str:
    """What an array holds, for a message: its dtype and first value."""
    return f"{v.dtype} values such as {v.flat[0].item()!r}" if v.size else f"no values ({v.dtype})"


def one_per_step(v: np.ndarray, key: str, where: str) -> np.ndarray:
    """[N] or [N 1 ..] -> [N]; more than one value per step is a UserError."""
    if v.size != len(v):
        raise UserError(f"{where}: {key!r} is shaped {list(v.shape)}; it needs one value per step, shaped "
                        f"[{len(v)}]")
    return v.reshape(len(v))


def check_numbers(v: np.ndarray, key: str, where: str, what: str, fix: str = "convert them to a numeric array"):
    """Numbers, all finite: a string or NaN would surface later as a raw error deep in training."""
    if v.dtype.kind not in NUMBERS:
        raise UserError(f"{where}: {key!r} holds {holds(v)}; {what} must be numbers: {fix}")
    if v.dtype.kind == "f" and not np.isfinite(v).all():
        step = int(np.flatnonzero(~np.isfinite(v.reshape(len(v), -1)).all(1))[0])
        raise UserError(f"{where}: {key!r} holds NaN or Inf (first at step {step}); {what} must be finite numbers: "
                        f"clean those steps or drop them from the buffer")


def check_actions(action: np.ndarray, where: str):
    """Actions as the rl domain trains on them (`action_space`): integer ids [N] index an embedding, so they
    are 0..MAX_ACTIONS-1; anything else is a vector of finite numbers per step."""
    check_numbers(action, "action", where, "actions", "integer ids 0..n-1 for discrete actions (from labels: "
                  "numpy.unique(action, return_inverse=True)[1]) or floats for continuous ones")
    kind, size = action_space(action)
    if kind == "discrete" and action.min() < 0:
        step = int(np.flatnonzero(action < 0)[0])
        raise UserError(f"{where}: 'action' holds integer action ids and {action[step]} (step {step}) is negative; "
                        f"discrete actions are ids 0..n-1: shift them (action - action.min()), or store continuous "
                        f"actions as floats")
    if kind == "discrete" and size > MAX_ACTIONS:
        raise UserError(f"{where}: 'action' holds integer action ids up to {size - 1}; discrete actions are ids "
                        f"0..n-1 with n at most {MAX_ACTIONS}: renumber them (numpy.unique(action, "
                        f"return_inverse=True)[1]), or store continuous actions as floats")
    if kind == "continuous" and size == 0:
        raise UserError(f"{where}: 'action' is shaped {list(action.shape)}, no value per step; store one action "
                        f"per step, shaped [N] (ids or numbers) or [N, d] (vectors)")


def episode_ids(v: np.ndarray, where: str) -> np.ndarray:
    """Integer episode ids [N]; whole-number floats (ids that went through a float column) are taken as ids."""
    whole = v.dtype.kind == "f" and np.isfinite(v).all() and (v == np.round(v)).all()
    if v.dtype.kind not in "biu" and not whole:
        bad = v[~np.isfinite(v) | (v != np.round(v))] if v.dtype.kind == "f" else v
        raise UserError(f"{where}: 'episode' holds {holds(bad)}; episode ids must be integers, one per step (the "
                        f"same id for every step of an episode): number the episodes, or leave 'episode' out and "
                        f"let terminated/truncated mark the ends")
    return v.astype(np.int64) if whole else v


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
    root = cache_root(cache_dir)
    path = root / f"{env.replace('/', '_')}_{steps}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        try:
            return read_buffer(path, cache_dir)
        except UserError as e:
            print(f"multissl: warning: collecting the default buffer again: {e}", file=sys.stderr)
            path.unlink(missing_ok=True)
    with one_maker(path):  # another process collecting it now: wait and read theirs
        if not path.exists():
            print(f"multissl: collecting the default {env} buffer once ({steps} random-policy steps, pixels) into "
                  f"{path}", file=sys.stderr)
            collect(env, steps, out=path, seed=seed, **settings)
    return read_buffer(path, cache_dir)
