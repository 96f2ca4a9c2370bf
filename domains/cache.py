"""Where embedded default data that is generated on first use (spoken words, the CartPole buffer, moving digits, a
trained tokenizer) is cached, and the one way it is written: a temporary file, then published under its name by the
first writer only. A killed writer never leaves a half-written file, and processes that generate the same default at
once (loader workers, test workers, the processes of a run on one machine) all read the one that was published
first — generating twice need not give the same bytes (a tokenizer's training is not deterministic).

What is converted once from a user's file (a .npz's arrays, a Minari dataset) is kept in a versioned folder: named
after its source's version, complete once its manifest is published, removed when its source changes."""
import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np


def default_cache_dir() -> Path:
    """$MULTISSL_CACHE, else $XDG_CACHE_HOME/multissl, else ~/.cache/multissl."""
    if os.environ.get("MULTISSL_CACHE"):
        return Path(os.environ["MULTISSL_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "multissl"


def publish(write, path: Path):
    """write(file) fills a temporary file, which becomes `path` unless another writer published one first (then
    theirs is kept: read `path` back after publishing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"  # open() keeps the umask
    try:
        with open(tmp, "xb") as f:
            write(f)
        try:
            os.link(tmp, path)  # atomic, and fails when the name exists: the first writer wins
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: the last writer wins
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def one_maker(path: Path):
    """Held while this process alone makes what `path` will hold (an exclusive lock on a file beside it, which the
    system releases when its holder ends, even killed): processes of one machine that want the same default at once
    wait here, then read what the first made, instead of each making it (seconds of synthesis or collection). Without
    fcntl (Windows): no waiting, each makes it and the first published is kept."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def save_npz(path: Path, arrays: dict):
    """Compressed .npz at `path`, published once (`publish`): read it back for what every process uses."""
    publish(lambda f: np.savez_compressed(f, **arrays), path)


# ---- versioned folders: what is converted once from a user's file, kept until that file changes -------------------
# A folder is named after its source's version and is complete once its manifest (the source, as JSON) is published:
# the manifest is written last, so a folder a killed writer left is unfinished and is made again.

def file_version(path) -> dict:
    """{"path": resolved, "size", "mtime_ns"}: what tells one version of a file from the next (OSError when it is
    unreadable)."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def version_folder(root: Path, source: dict, length: int = 24) -> Path:
    """root/<hash of the source>: where one version of a conversion is kept."""
    return Path(root) / hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:length]


def complete(folder: Path, manifest: str) -> bool:
    return (Path(folder) / manifest).is_file()


def finish(folder: Path, manifest: str, record: dict):
    """Publishes the manifest, last: the folder is complete."""
    publish(lambda f: f.write(json.dumps(record).encode()), Path(folder) / manifest)


def file_changed(source: dict) -> bool:
    """Whether the file of a `file_version` record has changed or is gone since."""
    try:
        stat = os.stat(source["path"])
    except FileNotFoundError:
        return True
    return (stat.st_size, stat.st_mtime_ns) != (source["size"], source["mtime_ns"])


def forget_stale(root: Path, manifest: str, changed=file_changed):
    """Removes the complete folders under root whose source has `changed` (manifest record -> bool) since: each holds
    a conversion of it, often uncompressed. A manifest that cannot be read or judged is left alone."""
    for path in Path(root).glob(f"*/{manifest}"):
        try:
            stale = changed(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if stale:  # the manifest first: a reader never finds one over missing arrays
            path.unlink(missing_ok=True)
            shutil.rmtree(path.parent, ignore_errors=True)
