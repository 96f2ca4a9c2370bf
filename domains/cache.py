"""Where embedded default data that is generated on first use (spoken words, the CartPole buffer, moving digits, a
trained tokenizer) is cached, and the one way it is written: a temporary file, then published under its name by the
first writer only. A killed writer never leaves a half-written file, and processes that generate the same default at
once (loader workers, test workers, the processes of a run on one machine) all read the one that was published
first — generating twice need not give the same bytes (a tokenizer's training is not deterministic)."""
import os
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


def save_npz(path: Path, arrays: dict):
    """Compressed .npz at `path`, published once (`publish`): read it back for what every process uses."""
    publish(lambda f: np.savez_compressed(f, **arrays), path)
