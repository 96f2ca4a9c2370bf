"""In-memory data: a Python object in data.path instead of a path (what `multissl.fit(data=...)` passes), shared by
the domains. Telling an object from a path, its labels — a tuple `(samples, labels)`, or the items `(x, y)` /
`{"x": x, "y": y}` of a Dataset or list — and class ids from labels. Each domain's sources module turns the samples
into what its file readers produce, and the domain splits them as it splits one unsplit file or folder.

Images and audio stay the caller's object, each sample converted when its item is asked for, as files are read: loader
workers share them through fork (the default on Linux); under spawn they are pickled (tensors into shared memory).
Tables, texts, clips and buffers become what their file readers hold."""
import os

import numpy as np
import torch

from multissl.errors import UserError

from .files import Files, say_unseen

LABELS = "give one label per {item}, an integer class id (-1: none) or a string; in memory: (samples, labels)"


def in_memory(path) -> bool:
    """data.path holds an object (array, tensor, DataFrame, list, dict, Dataset ...), not a path."""
    return path is not None and not isinstance(path, (str, bytes, os.PathLike))


def given(path) -> bool:
    """data.path is set: an object, or a non-empty path. (`not path` is ambiguous for an array or a DataFrame.)"""
    return in_memory(path) or bool(path)


def is_array(x) -> bool:
    return isinstance(x, np.ndarray) or torch.is_tensor(x)


def numpy(x) -> np.ndarray:
    """An array, tensor (any device) or nested list as a numpy array; no copy for numpy and CPU tensors."""
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def describe(x) -> str:
    """What a program passed, for a message: its type, with dtype and shape for arrays and tensors."""
    if is_array(x):
        kind = "a numpy array" if isinstance(x, np.ndarray) else "a tensor"
        return f"{kind} of {str(x.dtype).removeprefix('torch.')} shaped {list(x.shape)}"
    name = type(x).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    if isinstance(x, (list, tuple)):
        return f"{article} {name} of {len(x)}" + (f" {type(x[0]).__name__}" if x else "")
    return f"{article} {name}"


class Column(torch.utils.data.Dataset):
    """The samples of a Dataset or list whose items are (x, y) or {"x": x, "y": y}: item i's x, read when asked for."""

    def __init__(self, items, key):
        self.items, self.key = items, key

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i][self.key]


def unpack(obj) -> tuple:
    """data.path's object -> (samples, labels or None). A tuple of two is (samples, labels); a Dataset or list whose
    items are (x, y) or {"x": x, "y": y} gives a lazy view of the x's, and its labels: a Dataset's `targets`
    (torchvision's) when it has one, else each item's y, read once here. Anything else is the samples, unlabelled."""
    if isinstance(obj, tuple) and len(obj) == 2:
        return obj
    if isinstance(obj, torch.utils.data.IterableDataset):
        raise UserError(f"data.path holds {describe(obj)}, an iterable Dataset, which cannot be read by index; pass a "
                        f"map-style Dataset (with __len__ and __getitem__) or a list")
    if not isinstance(obj, (list, torch.utils.data.Dataset)) or len(obj) == 0:
        return obj, None
    first = obj[0]
    pair, record = isinstance(first, tuple) and len(first) == 2, isinstance(first, dict) and "x" in first
    if not (pair or record):
        return obj, None
    targets = getattr(obj, "targets", None)
    if targets is None or len(targets) != len(obj):
        label = (lambda item: item[1]) if pair else (lambda item: item.get("y"))
        targets = [label(obj[i]) for i in range(len(obj))]
    return Column(obj, 0 if pair else "x"), targets


def per_sample(labels, n: int, where: str = "data.path", item: str = "sample") -> list:
    """Labels as a list of n values; not one per sample (`item` names what a sample is) is a UserError naming
    `where`."""
    try:
        shape = None if isinstance(labels, (str, bytes)) else list(np.shape(labels))
    except ValueError:  # ragged nested lists
        shape = None
    if shape != [n]:
        raise UserError(f"{where}: labels of shape {shape or type(labels).__name__} for {n} {item}s; "
                        f"{LABELS.format(item=item)}")
    return labels.tolist() if hasattr(labels, "tolist") else list(labels)


def class_values(labels, n: int, where: str = "data.path", item: str = "sample") -> list | None:
    """Labels -> n values, each an int class id, a string, or None (unlabelled: -1, None or NaN); None when there
    are no labels. Floats, booleans or a mix of ids and strings are a UserError."""
    if labels is None:
        return None
    out = []
    for v in per_sample(labels, n, where, item):
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, (int, np.integer)) and v < 0):
            out.append(None)
        elif isinstance(v, (int, np.integer, str)) and not isinstance(v, (bool, np.bool_)):
            out.append(int(v) if not isinstance(v, str) else str(v))
        else:
            raise UserError(f"{where}: labels hold {type(v).__name__} values such as {v!r}; "
                            f"{LABELS.format(item=item)} (e.g. labels.astype(int))")
    if len({type(v) for v in out if v is not None}) > 1:
        raise UserError(f"{where}: labels mix integer ids and strings; {LABELS.format(item=item)}")
    return out


def encode_labels(labels, n: int, classes: list[str] | None, where: str,
                  item: str = "sample") -> tuple[list[int], list[str] | None]:
    """Labels -> (class ids, class names). Ids are taken as they are (names "0".."k"); strings become ids in the
    sorted order of their names, or of `classes` when given (a held-out split: names it lacks are unlabelled, said)."""
    values = class_values(labels, n, where, item)
    present = [v for v in values or [] if v is not None]
    if not present:
        return [-1] * n, classes
    if isinstance(present[0], int):
        return [-1 if v is None else v for v in values], classes or [str(k) for k in range(max(present) + 1)]
    if classes:
        say_unseen(values, set(classes), where)
    classes = classes or sorted(set(present))
    index = {c: k for k, c in enumerate(classes)}
    return [index.get(v, -1) for v in values], classes


class Reader:
    """Sample j of in-memory samples, converted by `convert(sample, name=...)` when its item is asked for: the
    reader of a Files split over range(n), as rows.Rows reads an HF split's rows."""

    def __init__(self, samples, convert, what: str):
        self.samples, self.convert, self.what = samples, convert, what

    def __call__(self, j: int):
        return self.convert(self.samples[j], name=f"{self.what} {j} of data.path")


def memory_split(samples, labels, convert, what: str) -> Files:
    """Samples read lazily as files are (files.Files over range(n)), with class ids from `labels`."""
    ids, classes = encode_labels(labels, len(samples), None, "data.path")
    return Files(range(len(samples)), ids, {c: k for k, c in enumerate(classes or [])}, Reader(samples, convert, what),
                 skip_bad=False)
