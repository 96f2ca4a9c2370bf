"""Replay data in formats other than the buffer's own, read into the buffer format (buffer.py): Minari datasets; and
stable-baselines3's saved replay buffers, which are pickles and are refused (docs/domains/rl.md).

A Minari dataset is `minari:<dataset id>` (in the local Minari root: $MINARI_DATASETS_PATH, else ~/.minari/datasets;
nothing is downloaded) or its folder. It is converted once into a buffer folder of .npy files in the multissl cache,
which is then memory-mapped as any buffer folder is: episodes are read one at a time (`MinariDataset.iterate_episodes`)
and their observations streamed into obs.npy, so the conversion holds one episode and the small per-step arrays
(actions, rewards, flags, episode ids) in memory. An episode stores one observation more than it has actions, the one
after its last step: it is dropped, so step t holds the observation the agent acted on, as a replay buffer stores it.
Dict or tuple observations need the part to read, named after a `#`: `minari:<id>#observation` (a key, `a/b` for a
nested one, or a tuple index)."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from multissl.errors import UserError, disk_error, reason, require

from ..cache import complete, finish, forget_stale, publish
from ..memory import in_memory
from .buffer import cache_root, read_buffer

PREFIX = "minari:"
CONVERSION = 1  # of the cached arrays: bump when the conversion changes, so old ones are not reused
MANIFEST = "source.json"  # a conversion's dataset and its files, published last: a folder without one is unfinished
PICKLE_SUFFIXES = (".pkl", ".pickle")
SB3_HELP = "docs/domains/rl.md#stable-baselines3-replay-buffers"


def read_format(path, cache_dir: str | None = None) -> dict | None:
    """data.path in another format -> the buffer read_buffer returns (a Minari dataset); a pickle (stable-baselines3's
    save_replay_buffer) is a UserError, never unpickled; None for anything else (read_buffer's to read)."""
    if in_memory(path) or not path:
        return None
    if is_minari(path):
        return read_minari(path, cache_dir=cache_dir)
    if is_pickle(Path(path).expanduser()):
        raise UserError(f"{path} is a pickle (what stable-baselines3's save_replay_buffer writes), and unpickling a "
                        f"file can run code, so multissl does not open it; export it to a .npz buffer with the five "
                        f"lines in {SB3_HELP}")
    return None


def is_pickle(path: Path) -> bool:
    """A .pkl/.pickle file, or one that starts as a pickle of protocol 2 or later does (only two bytes are read)."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(2)
    return path.suffix.lower() in PICKLE_SUFFIXES or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def is_minari(path) -> bool:
    """data.path names a Minari dataset: minari:<id>, or a folder holding one (`data_folder`)."""
    if in_memory(path) or not path:
        return False
    text = split_key(os.fspath(path))[0]
    return text.startswith(PREFIX) or data_folder(Path(text).expanduser()) is not None


def split_key(text: str) -> tuple[str, str | None]:
    """'<dataset>#<key>' -> (dataset, key); a path that exists with its '#' is a path."""
    if "#" in text and not Path(text).expanduser().exists():
        dataset, key = text.rsplit("#", 1)
        return dataset, key or None
    return text, None


def data_folder(folder: Path) -> Path | None:
    """The folder of a Minari dataset's metadata.json and data: the dataset folder's data/, or that folder itself."""
    for candidate in (folder / "data", folder):
        meta = candidate / "metadata.json"
        if meta.is_file():
            try:
                keys = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(keys, dict) and {"dataset_id", "data_format"} <= keys.keys():
                return candidate
    return None


def minari_root() -> Path:
    """Where Minari keeps local datasets (as minari.storage.get_dataset_path, which also creates it)."""
    return Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets").expanduser()


def locate_minari(source) -> tuple[Path, str | None, str]:
    """minari:<id>[#key] or a dataset folder[#key] -> (its data folder, the observation key, a name for messages)."""
    text, key = split_key(os.fspath(source))
    if text.startswith(PREFIX):
        dataset_id = text[len(PREFIX):].strip("/")
        data = data_folder(minari_root() / dataset_id)
        if data is None:
            raise UserError(f"Minari dataset {dataset_id} is not in the local Minari root {minari_root()} "
                            f"($MINARI_DATASETS_PATH); multissl never downloads: fetch it once with `minari download "
                            f"{dataset_id}`, or point data.path at its folder")
        return data, key, f"Minari dataset {dataset_id}"
    data = data_folder(Path(text).expanduser())
    if data is None:
        raise UserError(f"{text} is not a Minari dataset folder (no metadata.json with dataset_id and data_format in "
                        f"it or in its data/); point data.path at the dataset's folder, or use minari:<dataset id>")
    return data, key, f"Minari dataset {text}"


def read_minari(source, obs_key: str | None = None, cache_dir: str | None = None) -> dict:
    """A Minari dataset (`minari:<id>` in the local Minari root, or its folder; `#<key>` picks the part of dict or tuple
    observations, as `obs_key` does) -> the buffer `read_buffer` returns, with `episode` ids, memory-mapped from its
    conversion to a folder of .npy under cache_dir (None = the multissl cache), made once."""
    data, key, where = locate_minari(source)
    obs_key = obs_key or key
    meta = json.loads((data / "metadata.json").read_text())
    check_metadata(meta, where)
    source = {"path": str(data.resolve()), "files": fingerprint(data), "obs_key": obs_key}
    root = cache_root(cache_dir) / "minari"
    name = str(meta["dataset_id"]).replace("/", "_")
    out = root / f"{name}-{hashlib.sha256(json.dumps([CONVERSION, source]).encode()).hexdigest()[:16]}"
    if not complete(out, MANIFEST):
        dataset = open_minari(data, where)
        try:
            convert(dataset, obs_key, out, where)
        except (OSError, KeyError, ValueError) as e:  # a damaged file, as h5py or pyarrow meet it; a full disk
            raise UserError(disk_error(e, str(out)) or f"cannot read {where}: {reason(e)}; check it with `minari "
                            f"show`, or write it again") from None
        finish(out, MANIFEST, source)
        forget_stale(root, MANIFEST, dataset_changed)
    return read_buffer(out)


def fingerprint(data: Path) -> list:
    """Each file of a dataset's data folder with its size and modification time: a dataset written (or downloaded)
    again is converted again."""
    return sorted([str(p.relative_to(data)), p.stat().st_size, p.stat().st_mtime_ns] for p in data.rglob("*")
                  if p.is_file())


def dataset_changed(source: dict) -> bool:
    """Whether the dataset of a conversion's manifest has changed or is gone since (`cache.forget_stale`)."""
    return fingerprint(Path(source["path"])) != source["files"]


def minari_obs_shape(path) -> tuple | None:
    """One observation's shape in a Minari dataset (of its `#` part), from its metadata.json alone: what choosing the
    encoder needs before the data is read. None when it cannot be told (reading the dataset then says why)."""
    if not is_minari(path):
        return None
    try:
        data, key, _ = locate_minari(path)
        space = json.loads(json.loads((data / "metadata.json").read_text())["observation_space"])
        for k in key.split("/") if key else []:
            space = space["subspaces"][int(k) if isinstance(space["subspaces"], list) else k]
        return tuple(space["shape"]) if space["type"] == "Box" else None
    except (UserError, OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def check_metadata(meta: dict, where: str):
    """Both spaces are in the file: without one, Minari makes the env named in metadata.json to learn it, and making
    an env imports and runs the code its spec names."""
    missing = [k for k in ("observation_space", "action_space") if k not in meta]
    if missing:
        raise UserError(f"{where}: its metadata.json has no {missing[0]}, and Minari would make the env it names to "
                        f"learn it, which runs that env's code; write the dataset again with Minari 0.5 (it stores "
                        f"both spaces)")


def open_minari(data: Path, where: str):
    minari = require("minari", f"reading {where}")
    try:
        return minari.MinariDataset(data)
    except ImportError as e:  # minari's storages say which of its own extras is missing (h5py, pyarrow)
        raise UserError(f"reading {where}: {reason(e)}; install it with: pip install 'multissl[rl]'") from None
    except (ValueError, KeyError, NotImplementedError, OSError) as e:
        raise UserError(f"cannot read {where}: {reason(e)}; check it with `minari show`, or write it again") from None


def convert(dataset, obs_key: str | None, out: Path, where: str):
    """The dataset's episodes, one at a time -> out/obs.npy [N *obs_shape], streamed, and out/<key>.npy for action,
    reward, terminated, truncated and episode, each published once (`cache.publish`)."""
    keys, obs_space = observation_part(dataset.observation_space, obs_key, where)
    if kind(dataset.action_space) not in ("array", "ids"):
        raise UserError(f"{where}: its actions are {describe_space(dataset.action_space)}; the rl domain reads one "
                        f"array of actions per step (Box, Discrete, MultiDiscrete or MultiBinary)")
    shape, dtype, n = tuple(obs_space.shape), np.dtype(obs_space.dtype), dataset.total_steps
    steps = {k: [] for k in ("action", "reward", "terminated", "truncated", "episode")}

    def write(f):
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                                                 "shape": (n, *shape)})
        written = 0
        for ep in dataset.iterate_episodes():
            obs, t = np.asarray(take(ep.observations, keys)), len(ep.rewards)  # obs [T+1 *shape]
            if len(obs) != t + 1 or len(ep.actions) != t:
                raise UserError(f"{where}: episode {ep.id} holds {len(obs)} observations, {len(ep.actions)} actions "
                                f"and {t} rewards; a Minari episode holds one observation more than actions")
            if obs.shape[1:] != shape:
                raise UserError(f"{where}: episode {ep.id}'s observations are shaped {list(obs.shape[1:])}, its "
                                f"observation space {list(shape)}; write the dataset again")
            written += t
            if written > n:
                raise damaged(n, "more", where)
            f.write(np.ascontiguousarray(obs[:-1], dtype).tobytes())  # the observation after the last step dropped
            for k, v in zip(steps, (actions(ep.actions, dataset.action_space), ep.rewards, ep.terminations,
                                    ep.truncations, np.full(t, int(ep.id), np.int64))):
                steps[k].append(np.asarray(v))
        if written != n:
            raise damaged(n, written, where)

    publish(write, out / "obs.npy")
    for k, v in steps.items():
        publish(lambda f, v=v: np.save(f, np.concatenate(v)), out / f"{k}.npy")


def damaged(n: int, held, where: str) -> UserError:
    return UserError(f"{where}: its metadata.json counts {n} steps, its episodes hold {held}; the dataset is damaged: "
                     f"write it again")


def kind(space) -> str:
    """What a gymnasium space holds, as this module reads it: "dict", "tuple", "ids" (Discrete and MultiDiscrete,
    numbered from their `start`), "array" (Box, MultiBinary), or else the space's class name."""
    from gymnasium import spaces
    if isinstance(space, (spaces.Dict, spaces.Tuple)):
        return type(space).__name__.lower()
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return "ids"
    return "array" if isinstance(space, (spaces.Box, spaces.MultiBinary)) else type(space).__name__


def observation_part(space, obs_key: str | None, where: str) -> tuple[list, object]:
    """The keys that lead from the observation space to the part read (`take`), and that part's space, an array."""
    keys, part = [], space
    for k in (obs_key.split("/") if obs_key else []):
        if kind(part) == "dict" and k in part.spaces:
            keys.append(k)
        elif kind(part) == "tuple" and k.isdigit() and int(k) < len(part.spaces):
            keys.append(int(k))
        else:
            raise UserError(f"{where}: its observations have no part {obs_key!r} ({describe_space(space)}); name one "
                            f"of its parts after a '#' in data.path")
        part = part.spaces[keys[-1]]
    if kind(part) in ("dict", "tuple"):
        raise UserError(f"{where} has {describe_space(part)} observations; name the part to read after a '#' in "
                        f"data.path, e.g. {PREFIX}<id>#{first_array(part, keys)}")
    if kind(part) != "array" and not (kind(part) == "ids" and part.shape):
        raise UserError(f"{where}: its observations are {type(part).__name__}, not arrays of numbers; the rl domain "
                        f"reads array (Box) observations")
    return keys, part


def describe_space(space) -> str:
    if kind(space) == "dict":
        return f"dict (keys: {', '.join(space.spaces)})"
    if kind(space) == "tuple":
        return f"tuple (parts 0..{len(space.spaces) - 1})"
    return type(space).__name__


def first_array(space, keys: list) -> str:
    """The '#' key of the first array inside a dict or tuple space, after `keys`: what a message suggests."""
    path = [str(k) for k in keys]
    while kind(space) in ("dict", "tuple") and len(space.spaces):
        name = next(iter(space.spaces)) if kind(space) == "dict" else 0
        path.append(str(name))
        space = space.spaces[name]
    return "/".join(path)


def take(obs, keys: list):
    for k in keys:
        obs = obs[k]
    return obs


def actions(a, space) -> np.ndarray:
    """One episode's actions [T ...]; discrete ids shifted to start at 0 (a Discrete space may start elsewhere)."""
    a = np.asarray(a)
    return a.astype(np.int64) - np.asarray(space.start, np.int64) if kind(space) == "ids" else a
