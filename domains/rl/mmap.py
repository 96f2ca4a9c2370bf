"""Replay buffers on disk, memory-mapped, so that no buffer is held whole in memory: a folder of .npy files (one per
key: obs.npy, action.npy, …) is opened as it is; a .npz is copied once into such a folder in the cache, member by
member in bounded chunks, then opened. The arrays travel to loader workers as their paths (`Mapped`), never as their
contents: a memmap pickles as a full copy of its data."""
import hashlib
import json
import os
import shutil
import zipfile
import zlib
from pathlib import Path

import numpy as np

from multissl.errors import UserError, reason

from ..cache import publish

MANIFEST = "buffer.json"  # a copy's source and keys, published last: a copy without one is unfinished
CHUNK = 1 << 22  # bytes of a .npz member copied at a time
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
    """One .npy memory-mapped (read-only); an object array is refused by name, never unpickled."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
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
        return tuple(np.load(Path(path).expanduser() / "obs.npy", mmap_mode="r", allow_pickle=False).shape[1:])
    except (OSError, ValueError):
        return None


def open_npz(path: Path, root: Path) -> Mapped:
    """A .npz buffer, memory-mapped from its copy under `root`: a folder of .npy keyed by the file's path, size and
    modification time, made on first use (`convert`), so a changed file is copied again."""
    where = f"replay buffer {path}"
    try:
        stat = path.stat()
    except OSError as e:
        raise UserError(f"cannot read {where}: {reason(e)}; point data.path at a replay buffer .npz") from None
    source = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    folder = root / hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:24]
    if not (folder / MANIFEST).exists():
        convert(path, folder, source, where)
        forget_stale(root)
    return open_folder(folder, where)


def plain(key: str) -> bool:
    """A key that names a file of its own in the copy (no folders, no hidden files)."""
    return bool(key) and key == Path(key).name and not key.startswith(".")


def convert(path: Path, folder: Path, source: dict, where: str):
    """The .npz's arrays -> folder/<key>.npy, byte for byte (a .npz member is a .npy file), each published
    atomically (`cache.publish`: processes converting at once write the same bytes), then the manifest."""
    try:
        with zipfile.ZipFile(path) as z:
            members = {n[:-4]: n for n in z.namelist() if n.endswith(".npy") and plain(n[:-4])}
            for key, name in members.items():  # every header first: a refused array costs no copy
                with z.open(name) as f:
                    check_header(f, key, where)
            for key, name in members.items():
                publish(lambda out, name=name: copy_member(z, name, out), folder / f"{key}.npy")
        publish(lambda out: out.write(json.dumps({**source, "keys": sorted(members)}).encode()), folder / MANIFEST)
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


def check_header(f, key: str, where: str):
    """A .npy member's header: an object array is refused before anything is copied."""
    major = np.lib.format.read_magic(f)[0]
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    if read(f)[2].hasobject:
        raise objects_refused(where, key)


def copy_member(z: zipfile.ZipFile, name: str, out):
    with z.open(name) as f:  # decompressed CHUNK bytes at a time; zipfile checks the CRC at the end
        shutil.copyfileobj(f, out, CHUNK)


def forget_stale(root: Path):
    """Removes the copies whose .npz has changed or is gone since: each holds the buffer's uncompressed arrays."""
    for manifest in root.glob(f"*/{MANIFEST}"):
        try:
            source = json.loads(manifest.read_text())
            stat = os.stat(source["path"])
            stale = (stat.st_size, stat.st_mtime_ns) != (source["size"], source["mtime_ns"])
        except FileNotFoundError:
            stale = True
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if stale:  # the manifest first: a reader never finds one over missing arrays
            manifest.unlink(missing_ok=True)
            shutil.rmtree(manifest.parent, ignore_errors=True)
