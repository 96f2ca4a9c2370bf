"""Where the domains' data comes from, shared by them: folders of sample files (splits, labels from class
subfolders, lazy reading with an optional counted skip of unreadable files) and HF `datasets` splits."""
from pathlib import Path

import torch

from multissl.errors import UserError, reason, require


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


def split_folders(root: Path) -> dict[str, Path]:
    """`train/` (and `test/`) subfolders when there is a `train/`, else the root as the training split."""
    if (root / "train").is_dir():
        return {s: root / s for s in ("train", "test") if (root / s).is_dir()}
    return {"train": root}


def labelled(files: list[Path], folder: Path, classes: dict | None):
    """Class index of each file from its subfolder (root files: -1). `classes` None = build it here
    (the training split); the test split reuses the training mapping."""
    if classes is None:
        classes = {c: i for i, c in enumerate(sorted({f.parent.name for f in files if f.parent != folder}))}
    return [classes.get(f.parent.name, -1) if f.parent != folder else -1 for f in files], classes


def locate(path: str, what: str, folders: bool = True, files: bool = False) -> tuple[str, Path | str]:
    """data.path -> (kind, where): "folder" (a folder of sample files, when the domain reads `folders`),
    "file" (when it reads `files`), "saved" (a saved HF dataset folder) or "cache" (hf:<name>, an HF
    dataset in the local cache). `what` names what the domain reads, for the error."""
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


def hf_splits(path: str, from_disk: bool) -> dict:
    """A saved HF dataset folder (`from_disk`) or a dataset in the local HF cache -> {"train": Dataset,
    "test": Dataset (the "test" split, else "validation"; absent when there is neither)}."""
    datasets = require("datasets", "an HF dataset in data.path")
    try:
        dd = datasets.load_from_disk(path) if from_disk else datasets.load_dataset(path)
    except Exception as e:  # a folder that is not a saved dataset, or a name missing from the offline cache
        how = "save it there with save_to_disk" if from_disk else "load it once online so it is in the local cache"
        raise UserError(f"cannot load the HF dataset {path}: {reason(e)}; {how}, or point data.path at your files") \
            from None
    if isinstance(dd, datasets.Dataset):
        dd = datasets.DatasetDict({"train": dd})
    if "train" not in dd:
        raise UserError(f"HF dataset at {path} has no 'train' split (has {list(dd)}); save one named train")
    test = next((s for s in ("test", "validation") if s in dd), None)
    return {"train": dd["train"], **({"test": dd[test]} if test else {})}
