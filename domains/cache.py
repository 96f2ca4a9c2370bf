"""Where embedded default data that is generated on first use (spoken words, the CartPole buffer) is cached,
and the one way it is written: a temporary file, then a rename, so a concurrent or killed writer never
leaves a half-written file behind."""
import os
import uuid
from pathlib import Path

import numpy as np


def default_cache_dir() -> Path:
    """$MULTISSL_CACHE, else $XDG_CACHE_HOME/multissl, else ~/.cache/multissl."""
    if os.environ.get("MULTISSL_CACHE"):
        return Path(os.environ["MULTISSL_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "multissl"


def save_npz(path: Path, arrays: dict):
    """Compressed .npz at `path`, written atomically (unique temporary name per writer, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"  # open() keeps the umask
    try:
        with open(tmp, "xb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
