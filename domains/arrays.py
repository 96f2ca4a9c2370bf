"""Arrays of .npy and .npz files, memory-mapped: a dataset of any size costs the memory of what is read from it.
A .npy maps as it is. A .npz (a zip of .npy files, compressed or not) cannot be mapped, so the arrays asked for are
copied once, streamed, into .npy files in the multissl cache (`domains.cache`), one folder per version of the .npz
(its resolved path, size and modification time): a changed file is converted again, and its older copies removed.

Pickling a memmap copies its contents: datasets keep the file's path and map it again in each process."""
import hashlib
import shutil
import zipfile
from pathlib import Path
from urllib.parse import quote

import numpy as np

from .cache import default_cache_dir, publish


def open_npy(path) -> np.ndarray:
    """A .npy file as a read-only np.memmap; numbers and strings only (a pickled object array is an error)."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def is_npz(path) -> bool:
    """Whether the file is a .npz (a zip), whatever its name; otherwise it is read as a .npy."""
    return zipfile.is_zipfile(path)


def npz_names(path) -> list[str]:
    """The names of the arrays a .npz holds, in its order (np.load's keys)."""
    with zipfile.ZipFile(path) as z:
        return [_array_name(m) for m in z.namelist()]


def npz_to_npy(path, names=None, cache_dir=None) -> dict[str, Path]:
    """{name: .npy file} for the arrays `names` (None: all) of the .npz at `path`, each converted once into the cache
    (cache_dir, default `default_cache_dir()`) and published atomically (a temporary file, then its name: the first
    writer wins, so loader workers and the processes of a run can convert at once). Bytes are copied as stored, so
    a converted array equals np.load's bit for bit. A name the .npz lacks raises KeyError."""
    path = Path(path)
    folder = version_folder(path, cache_dir)
    out, converted = {}, False
    with zipfile.ZipFile(path) as z:
        members = {_array_name(m): m for m in z.namelist()}
        for name in members if names is None else names:
            if name not in members:
                raise KeyError(f"{path} holds no array {name!r}")
            out[name] = folder / f"{quote(name, safe='')}.npy"  # any key np.savez took, as one file name
            if not out[name].exists():
                publish(lambda f, m=members[name]: _copy(z, m, f), out[name])
                converted = True
    if converted:
        _drop_older_versions(folder)
    return out


def open_npz(path, names=None, cache_dir=None) -> dict[str, np.ndarray]:
    """{name: read-only np.memmap} of the arrays `names` (None: all) of a .npz: `npz_to_npy`, then `open_npy`."""
    return {k: open_npy(f) for k, f in npz_to_npy(path, names, cache_dir).items()}


def version_folder(path: Path, cache_dir=None) -> Path:
    """cache_dir/arrays/<stem>-<hash of the resolved path>/<size>-<mtime in ns>: where one version of a .npz's arrays
    is kept."""
    p = Path(path).resolve()
    st = p.stat()
    tag = hashlib.sha256(str(p).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / "arrays" / f"{p.stem}-{tag}" / f"{st.st_size}-{st.st_mtime_ns}"


def _array_name(member: str) -> str:
    return member.removesuffix(".npy")


def _copy(z: zipfile.ZipFile, member: str, f):
    """Stream a member into f a chunk at a time: a compressed array is never whole in memory."""
    with z.open(member) as src:
        shutil.copyfileobj(src, f, 1 << 22)


def _drop_older_versions(folder: Path):
    """Remove the copies of the earlier versions of the same .npz: a rewritten file must not fill the disk."""
    for old in folder.parent.iterdir():
        if old != folder and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
