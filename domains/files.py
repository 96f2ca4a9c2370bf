"""Where the domains' data comes from, shared by them: folders of sample files (listing, splits, labels from class
subfolders, lazy reading with an optional counted skip of unreadable files) and HF `datasets` splits."""
import contextlib
import os
import sys
from pathlib import Path

import torch

from multissl.errors import UserError, reason, require

from .shards import is_shards


class Files(torch.utils.data.Dataset):
    """`read(path)` per item; with skip_bad, an unreadable file (a UserError) is replaced by the next
    readable one and counted in "skipped"."""

    def __init__(self, files, labels, classes: dict, read, skip_bad: bool):
        self.files, self.labels, self.classes, self.read, self.skip_bad = files, labels, classes, read, skip_bad

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        for skipped in range(len(self.files)):
            j = (i + skipped) % len(self.files)
            try:
                return {"x": self.read(self.files[j]), "y": self.labels[j], "skipped": skipped}
            except UserError:
                if not self.skip_bad:
                    raise
        raise UserError(f"no readable file among {len(self.files)}; check the data folder")


def scan(folder, extensions) -> list[Path]:
    """The files at any depth under `folder` whose suffix, lowercased, is one of `extensions` (lowercase, with their
    dot: {".png", ".jpg"}), sorted: `sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in extensions
    and f.is_file())`, in one walk. Each folder is read once by os.scandir, whose entries carry their type, so a
    regular file or folder costs no stat and a name that does not match no Path object (a matching symbolic link
    costs one stat, of its target). As rglob: hidden files and folders count, a link to a file is listed by its own
    path, a linked folder is not entered, an unreadable folder is passed over, a missing folder lists nothing.

    No cache of the listing: before reusing one, it would have to be checked against the folders as they are now,
    and that check walks the same folders — on a local disk, the listing's own cost."""
    extensions = frozenset(extensions)
    found = []
    todo = [os.fspath(folder)] if os.path.isdir(folder) else []
    while todo:
        try:
            with os.scandir(todo.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
                    elif suffix(entry.name).lower() in extensions and entry.is_file():
                        found.append(Path(entry.path))
        except PermissionError:
            continue
    return sorted(found)  # as Paths: part by part, as the callers have always listed them


def suffix(name: str) -> str:
    """Path(name).suffix without the Path: from the last dot, unless that dot begins or ends the name."""
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def split_folders(root: Path) -> dict[str, Path]:
    """`train/` (and `test/`) subfolders when there is a `train/`, else the root as the training split."""
    if (root / "train").is_dir():
        return {s: root / s for s in ("train", "test") if (root / s).is_dir()}
    return {"train": root}


def labelled(files: list[Path], folder: Path, classes: dict | None):
    """Class index of each file from its subfolder (root files: -1). `classes` None = build it here
    (the training split); the test split reuses the training mapping, its other classes unlabelled (said)."""
    names = [f.parent.name if f.parent != folder else None for f in files]
    if classes is None:
        classes = {c: i for i, c in enumerate(sorted({n for n in names if n is not None}))}
    else:
        say_unseen(names, classes, str(folder))
    return [classes.get(n, -1) if n is not None else -1 for n in names], classes


def say_unseen(labels, known, where: str) -> int:
    """Held-out labels that training never saw cannot be scored by kNN or the probe (no training sample has them):
    they count as unlabelled, and one line says how many and which."""
    unseen = [v for v in labels if v is not None and v == v and v not in known]
    if unseen:
        names = sorted({str(v) for v in unseen})
        print(f"multissl: data: {len(unseen)} held-out samples in {where} have labels training never saw "
              f"({', '.join(names[:5])}{' …' if len(names) > 5 else ''}): scored as unlabelled", file=sys.stderr)
    return len(unseen)


def locate(path: str, what: str, folders: bool = True, files: bool = False) -> tuple[str, Path | str]:
    """data.path -> (kind, where): "shards" (a folder or URL written by python -m multissl.shards, opened with
    shards.Shards), "folder" (a folder of sample files, when the domain reads `folders`), "file" (when it reads
    `files`), "saved" (a saved HF dataset folder) or "cache" (hf:<name>, an HF dataset in the local cache). `what`
    names what the domain reads, for the error."""
    if not isinstance(path, (str, os.PathLike)):  # an object that a domain reading no in-memory data was given
        raise UserError(f"data.path holds a {type(path).__name__}; this domain reads {what}: pass its path")
    if is_shards(path):
        return "shards", str(path)
    p = Path(path).expanduser()
    if p.is_dir():
        saved = any(p.glob("*.arrow")) or any((p / f).exists() for f in ("dataset_dict.json", "state.json"))
        return ("folder" if folders and not saved else "saved"), p
    if p.is_file() and files:
        return "file", p
    if p.is_file():
        raise UserError(f"data.path {path} is a file; point it at {what}")
    if str(path).startswith("hf:"):
        return "cache", str(path)[3:]
    raise UserError(f"data.path {path} does not exist; point it at {what} (hf:<owner>/<name> for one in your "
                    f"local Hugging Face cache)")


def class_count(train) -> int | None:
    """Number of classes of a training split with labels `y` or `labels` (-1 = unlabelled); None if none."""
    labels = train.y.tolist() if hasattr(train, "y") else train.labels
    return max(labels) + 1 if labels and max(labels) >= 0 else None


@contextlib.contextmanager
def offline():
    """HF hub access off for the block: `hf:<name>` reads the local cache and nothing else (no download at run time,
    no request to the hub)."""
    import datasets
    import huggingface_hub.constants as hub
    saved = hub.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def hf_splits(path: str, from_disk: bool) -> dict:
    """A saved HF dataset folder (`from_disk`) or a dataset in the local HF cache (offline: never the network, and
    never a dataset script — datasets 4 runs none) -> {"train": Dataset, "test": Dataset (the "test" split, else
    "validation"; absent when there is neither)}. Both stay on disk, memory-mapped Arrow."""
    datasets = require("datasets", "an HF dataset in data.path")
    try:
        if from_disk:
            dd = datasets.load_from_disk(path)
        else:
            with offline():
                dd = datasets.load_dataset(path)
    except Exception as e:  # a folder that is not a saved dataset, or a name missing from the offline cache
        how = ("save it there with save_to_disk" if from_disk else
               f"multissl reads only the local cache: fill it once on a machine online with "
               f"python -c \"import datasets; datasets.load_dataset('{path}')\" (same HF_HOME), or save the dataset "
               f"with save_to_disk and point data.path at that folder")
        raise UserError(f"cannot load the HF dataset {path}: {reason(e)}; {how}, or point data.path at your files") \
            from None
    if isinstance(dd, datasets.Dataset):
        dd = datasets.DatasetDict({"train": dd})
    if "train" not in dd:
        raise UserError(f"HF dataset at {path} has no 'train' split (has {list(dd)}); save one named train")
    test = next((s for s in ("test", "validation") if s in dd), None)
    return {"train": dd["train"], **({"test": dd[test]} if test else {})}
