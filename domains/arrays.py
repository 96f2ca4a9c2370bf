"""Arrays of .npy and .npz files, memory-mapped: a dataset of any size costs the memory of what is read from it.
A .npy maps as it is. A .npz (a zip of .npy files, compressed or not) cannot be mapped, so the arrays asked for are
copied once, streamed, into .npy files in the multissl cache (`domains.cache`), one folder per version of the .npz
(`cache.version_folder` of its resolved path, size and modification time): a changed file is converted again, and
the copies of files changed or gone since are removed (`cache.forget_stale`).

Pickling a memmap copies its contents: datasets keep the file's path and map it again in each process."""
import shutil
import zipfile
from pathlib import Path
from urllib.parse import quote

import numpy as np

from .cache import complete, default_cache_dir, file_version, finish, forget_stale, publish, version_folder

CHUNK = 1 << 22  # bytes of a .npz member copied at a time
MANIFEST = "source.json"  # the .npz a folder of `npz_to_npy` copies is from (its `cache.file_version`)


def open_npy(path) -> np.ndarray:
    """A .npy file as a read-only np.memmap; numbers and strings only (a pickled object array is an error)."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def is_npz(path) -> bool:
    """Whether the file is a .npz (a zip), whatever its name; otherwise it is read as a .npy."""
    return zipfile.is_zipfile(path)


def npz_names(path) -> list[str]:
    """The names of the arrays a .npz holds, in its order (np.load's keys)."""
    with zipfile.ZipFile(path) as z:
        return list(npz_members(z))


def npz_members(z: zipfile.ZipFile) -> dict[str, str]:
    """{array name: zip member} of an open .npz, in its order."""
    return {m.removesuffix(".npy"): m for m in z.namelist()}


def member_dtype(z: zipfile.ZipFile, member: str) -> np.dtype:
    """A .npy member's dtype, from its header alone: what to refuse before anything is copied."""
    with z.open(member) as f:
        major = np.lib.format.read_magic(f)[0]
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        return read(f)[2]


def copy_members(z: zipfile.ZipFile, files: dict[str, Path]):
    """Each .npz member -> its .npy file {member: file}, byte for byte (a member is a .npy file, so the copy equals
    np.load's array), published atomically (`cache.publish`: the first writer wins, so loader workers and the
    processes of a run can convert at once); a file already published is kept."""
    for member, file in files.items():
        if not file.exists():
            publish(lambda f, m=member: _copy(z, m, f), file)


def npz_to_npy(path, names=None, cache_dir=None) -> dict[str, Path]:
    """{name: .npy file} for the arrays `names` (None: all) of the .npz at `path`, each converted once (`copy_members`)
    into its version's folder under cache_dir (default `default_cache_dir()`)/arrays. A name the .npz lacks raises
    KeyError."""
    path = Path(path)
    source = file_version(path)
    root = (Path(cache_dir) if cache_dir else default_cache_dir()) / "arrays"
    folder = version_folder(root, source)
    with zipfile.ZipFile(path) as z:
        members = npz_members(z)
        missing = [name for name in names or () if name not in members]
        if missing:
            raise KeyError(f"{path} holds no array {missing[0]!r}")
        out = {name: folder / f"{quote(name, safe='')}.npy" for name in (members if names is None else names)}
        copy_members(z, {members[name]: file for name, file in out.items()})  # any key np.savez took, as a file name
    if not complete(folder, MANIFEST):  # a new version: the copies of older ones go
        finish(folder, MANIFEST, source)
        forget_stale(root, MANIFEST)
    return out


def open_npz(path, names=None, cache_dir=None) -> dict[str, np.ndarray]:
    """{name: read-only np.memmap} of the arrays `names` (None: all) of a .npz: `npz_to_npy`, then `open_npy`."""
    return {k: open_npy(f) for k, f in npz_to_npy(path, names, cache_dir).items()}


def _copy(z: zipfile.ZipFile, member: str, f):
    """Stream a member into f CHUNK bytes at a time: a compressed array is never whole in memory (zipfile checks the
    CRC at the end)."""
    with z.open(member) as src:
        shutil.copyfileobj(src, f, CHUNK)
