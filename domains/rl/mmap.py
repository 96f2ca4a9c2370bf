"""Replay buffers on disk, memory-mapped, so that no buffer is held whole in memory: a folder of .npy files (one per
key: obs.npy, action.npy, …) is opened as it is; a .npz is copied once into such a folder in the cache, member by
member in bounded chunks, then opened. The arrays travel to loader workers as their paths (`Mapped`), never as their
contents: a memmap pickles as a full copy of its data.

Shards of a buffer (form "buffer", domains/shards.py) hold it as blocks of consecutive steps, each an uncompressed
.npz of every array's rows for those steps (the arrays that are not one entry per step, such as state_names and
env_config, whole in the first block); the blocks are streamed once, in order, into such a folder in the cache."""
import io
import math
import os
import shutil
import uuid
import zipfile
import zlib
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from multissl.errors import UserError, disk_error, reason

from ..arrays import copy_members, member_dtype, npz_members
from ..arrays import open_npy as map_npy
from ..cache import complete, file_version, finish, forget_stale, version_folder
from ..shards import Records, Shards, is_remote, is_shards

MANIFEST = "buffer.json"  # a copy's source and keys, published last: a copy without one is unfinished
FOLDER_HELP = "a folder of .npy arrays, one per key (obs.npy, action.npy, …; numpy.save)"
FORM = "buffer"  # the shard form: blocks of steps
BLOCK_STEPS = 4096
BLOCK_BYTES = 16 << 20  # a few blocks to a LitData chunk (64 MB), and one block at a time in memory either way


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


# ---- shards (form "buffer") ---------------------------------------------------------------------------------------

def block_records(buf: dict) -> Records:
    """A buffer (read_buffer's arrays, memory-mapped) as shard items: blocks of up to BLOCK_STEPS consecutive steps
    (fewer where a block would pass BLOCK_BYTES), each an uncompressed .npz sliced from the arrays, in step order.
    `info` names each array with its dtype and the shape of one step's entry (of the whole array for those in
    block 0 alone), and the total `steps`."""
    n = len(buf["obs"])
    keys = [k for k in buf if plain(k)]  # what a .npz's copy keeps: each array becomes a file of its name
    steps = [k for k in keys if buf[k].ndim and len(buf[k]) == n]
    step_bytes = sum(buf[k].dtype.itemsize * math.prod(buf[k].shape[1:]) for k in steps)
    size = max(1, min(BLOCK_STEPS, BLOCK_BYTES // max(step_bytes, 1)))

    def block(a: int) -> bytes:
        f = io.BytesIO()
        whole = {k: buf[k] for k in keys if k not in steps} if a == 0 else {}
        np.savez(f, **{k: buf[k][a:a + size] for k in steps}, **whole)  # a memmap's slice reads those rows only
        return f.getvalue()

    info = {"steps": n, "block": size, "arrays": {k: [buf[k].dtype.str, list(buf[k].shape[1:])] for k in steps},
            "whole": {k: [buf[k].dtype.str, list(buf[k].shape)] for k in keys if k not in steps}}
    return Records(FORM, math.ceil(n / size), lambda: (block(a) for a in range(0, n, size)), info=info)


def shards_obs_shape(path) -> tuple | None:
    """One observation's shape in rl shards, from their meta alone (None for anything else)."""
    if not (isinstance(path, (str, os.PathLike)) and is_shards(path)):
        return None
    try:
        shards = Shards(path, "rl")
        return tuple(shards.info["arrays"]["obs"][1]) if shards.form == FORM else None
    except (UserError, KeyError, IndexError, TypeError):  # loading the shards says why
        return None


def shards_folder(path: str, root: Path) -> Path:
    """rl shards as a folder of .npy under `root` for the shards' version, made on first use by streaming the blocks
    once (`unpack`), so shards written again are copied again."""
    shards = Shards(path, "rl")
    if shards.form != FORM or "train" not in shards.splits:
        raise UserError(f"data.path {path} holds {shards.form} shards, not a replay buffer's blocks; write them again "
                        f"with python -m multissl.shards <buffer> <out> domain=rl")
    where = f"the replay buffer shards at {shards.url}"
    source = {"url": shards.url, "version": shards.version}
    folder = version_folder(root, source)
    if not complete(folder, MANIFEST):
        try:
            unpack(shards.stream("train"), shards.info, folder, where)
        except OSError as e:
            raise UserError(disk_error(e, str(folder)) or f"cannot copy {where} into {folder}: {reason(e)}; check "
                            f"that the cache has room for the buffer (MULTISSL_CACHE= or domain.cache_dir= moves "
                            f"it)") from None
        finish(folder, MANIFEST, {**source, "keys": sorted([*shards.info["arrays"], *shards.info["whole"]])})
        forget_stale(root, MANIFEST, shards_changed)
    return folder


def shards_changed(source: dict) -> bool:
    """Whether the local shards of a copy's manifest were written again or removed since (`cache.forget_stale`);
    remote ones are never judged (an unreachable store is no reason to drop a copy)."""
    if is_remote(source["url"]):
        return False
    try:
        return Shards(source["url"], "rl").version != source["version"]
    except UserError:
        return True


def unpack(blocks, info: dict, folder: Path, where: str):
    """The blocks, in order -> folder/<key>.npy for each array: a step array's rows appended as its blocks arrive
    (one block in memory), the others saved from block 0, then each moved into place."""
    n, arrays, whole = info["steps"], info["arrays"], info["whole"]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = {k: folder / f".{k}.npy.{uuid.uuid4().hex}.tmp" for k in (*arrays, *whole)}
    try:
        with ExitStack() as stack:
            files, written = {k: stack.enter_context(open(tmp[k], "xb")) for k in arrays}, 0
            for j, payload in enumerate(blocks):
                block = read_block(payload, arrays, whole if j == 0 else {}, where, j)
                for k, f in files.items():
                    if j == 0:
                        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(block[k].dtype),
                                                                 "fortran_order": False, "shape": (n, *arrays[k][1])})
                    f.write(np.ascontiguousarray(block[k]).tobytes())
                for k in whole if j == 0 else ():
                    with open(tmp[k], "xb") as f:  # np.save would add .npy to a name without it
                        np.save(f, block[k], allow_pickle=False)
                written += len(block["obs"])
        if written != n:
            raise damaged(where, f"their blocks hold {written} steps where their meta counts {n}")
        for k, t in tmp.items():
            os.replace(t, folder / f"{k}.npy")  # the same bytes whoever converts: the last writer wins
    finally:
        for t in tmp.values():
            t.unlink(missing_ok=True)


def read_block(payload: bytes, arrays: dict, whole: dict, where: str, j: int) -> dict:
    """Block j's arrays, each as `info` describes it ({key: [dtype, shape]}: of one step for `arrays`, whole for
    `whole`), every step array one row per step of the block."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            block = {k: z[k] for k in (*arrays, *whole) if k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise damaged(where, f"block {j} cannot be read ({reason(e)})") from None
    m = len(block.get("obs", ()))
    for k, (dtype, shape) in {**arrays, **whole}.items():
        got = block.get(k)
        if got is None or got.dtype.str != dtype or list(got.shape) != ([m, *shape] if k in arrays else shape):
            held = f"{got.dtype.str} {list(got.shape)}" if got is not None else "nothing"
            raise damaged(where, f"block {j} holds {held} as {k!r}")
    return block


def damaged(where: str, what: str) -> UserError:
    return UserError(f"{where} are damaged: {what}; write them again with python -m multissl.shards <buffer> <out> "
                     f"domain=rl")
