"""Replay buffers on disk, memory-mapped, so that no buffer is held whole in memory: a folder of .npy files (one per
key: obs.npy, action.npy, …) is opened as it is; a .npz is copied once into such a folder in the cache, member by
member in bounded chunks, then opened. The arrays travel to loader workers as their paths (`Mapped`), never as their
contents: a memmap pickles as a full copy of its data."""
import shutil
import zipfile
import zlib
from pathlib import Path

import numpy as np

from multissl.errors import UserError, reason

from ..arrays import copy_members, member_dtype, npz_members
from ..arrays import open_npy as map_npy
from ..cache import complete, file_version, finish, forget_stale, version_folder

MANIFEST = "buffer.json"  # a copy's source and keys, published last: a copy without one is unfinished
FOLDER_HELP = "a folder of .npy arrays, one per key (obs.npy, action.npy, …; numpy.save)"


class Mapped(dict):
    """A buffer's arrays (a dict, as `read_buffer` returns it), some memory-mapped from the .npy `files` {key: path}.
    Pickled (to loader workers under spawn, by deepcopy) an array still as it was opened travels as its path and is
    mapped again where it arrives; one replaced since (the flags cast to bool) travels as its values."""

    def __init__(self, arrays: dict, files: dict):
        super().__init__(arrays)
        self.files, self.opened = files, dict(arrays)

    def __reduce__(self):
        paths = {k: str(p) for k, p in self.files.items() if self.get(k) is self.opened[k]}
        values = {k: np.asarray(v) for k, v in self.items() if k not in paths}
        return reopen, (paths, values)


def reopen(paths: dict, values: dict) -> Mapped:
    """A pickled `Mapped`: its files mapped again, its other arrays as they were."""
    buf = Mapped({k: open_npy(Path(p), k, f"replay buffer {p}") for k, p in paths.items()}, paths)
    buf.update(values)
    return buf


def objects_refused(where: str, key: str) -> UserError:
    return UserError(f"cannot read {where}: {key!r} holds Python objects (an object array, which only loads as a "
                     f"pickle); write it again with numpy.save or numpy.savez as a plain array of numbers (no Python "
                     f"objects)")


def open_npy(path: Path, key: str, where: str) -> np.ndarray:
    """One .npy memory-mapped (`domains.arrays.open_npy`); an object array is refused by name, never unpickled."""
    try:
        return map_npy(path)
    except ValueError as e:
        if "Python objects" in str(e):
            raise objects_refused(where, key) from None
        raise UserError(f"cannot read {where}: {key!r} ({path.name}): {reason(e)}; write it again with numpy.save "
                        f"(plain arrays, no Python objects)") from None
    except OSError as e:
        raise UserError(f"cannot read {where}: {reason(e)}; check that {path} is readable") from None


def open_folder(folder: Path, where: str) -> Mapped:
    """Every <key>.npy of a folder, memory-mapped."""
    files = {p.stem: p for p in sorted(folder.glob("*.npy")) if not p.name.startswith(".")}
    if not files:
        raise UserError(f"data.path {folder} is a folder without .npy arrays; the rl domain reads one replay buffer "
                        f"file (.npz) or {FOLDER_HELP} (docs/domains/rl.md)")
    return Mapped({k: open_npy(p, k, where) for k, p in files.items()}, files)


def folder_obs_shape(path: str) -> tuple | None:
    """One observation's shape in a folder buffer, from obs.npy's header (None for anything else)."""
    try:
        return tuple(map_npy(Path(path).expanduser() / "obs.npy").shape[1:])
    except (OSError, ValueError):
        return None


def open_npz(path: Path, root: Path) -> Mapped:
    """A .npz buffer, memory-mapped from its copy under `root`: a folder of .npy for the file's version
    (`cache.version_folder`), made on first use (`convert`), so a changed file is copied again."""
    where = f"replay buffer {path}"
    try:
        source = file_version(path)
    except OSError as e:
        raise UserError(f"cannot read {where}: {reason(e)}; point data.path at a replay buffer .npz") from None
    folder = version_folder(root, source)
    if not complete(folder, MANIFEST):
        convert(path, folder, source, where)
        forget_stale(root, MANIFEST)
    return open_folder(folder, where)


def plain(key: str) -> bool:
    """A key that names a file of its own in the copy (no folders, no hidden files)."""
    return bool(key) and key == Path(key).name and not key.startswith(".")


def convert(path: Path, folder: Path, source: dict, where: str):
    """The .npz's arrays -> folder/<key>.npy (`domains.arrays.copy_members`), every header checked first (a refused
    array costs no copy), then the manifest."""
    try:
        with zipfile.ZipFile(path) as z:
            members = {k: m for k, m in npz_members(z).items() if m.endswith(".npy") and plain(k)}
            for key, member in members.items():
                if member_dtype(z, member).hasobject:
                    raise objects_refused(where, key)
            copy_members(z, {member: folder / f"{key}.npy" for key, member in members.items()})
        finish(folder, MANIFEST, {**source, "keys": sorted(members)})
    except UserError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError) as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"cannot read {where}: {reason(e)}; write it again with numpy.savez (plain arrays, no "
                        f"Python objects)") from None
    except OSError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"cannot copy {where} into {folder} to memory-map it: {reason(e)}; check that the file is "
                        f"readable and that the cache has room for its uncompressed arrays (MULTISSL_CACHE= or "
                        f"domain.cache_dir= moves it), or give the buffer as {FOLDER_HELP}") from None
