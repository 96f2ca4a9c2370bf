"""Where text comes from: the embedded chatterbot corpus; a .txt file (one sample per line); a folder of .txt files
(one sample per file, class subfolders label them, train/ and test/ honoured); a .csv / .tsv / .parquet / .jsonl table
(data.text_column, data.target; a text table's delimiter sniffed as for tables: , ; tab |); an HF dataset (a saved
folder or hf:<name>) with a string column; shards of the "texts" form (text/shards.py); texts in memory
(`memory`). Each is a `Source`: its splits as chunks of samples, and a key that changes when what is read changes.
`Corpus` reads a source once into the cache (flat UTF-8 and label files, `tokens`), and later runs read that instead.

Readers stream where the format allows — a .txt file line by line, a parquet file by row group, an HF dataset by
batches, shards item by item — so such a corpus of any size is read at bounded memory; a .csv / .tsv / .jsonl table,
the default corpus and texts in memory are read whole (a folder's file list too, one file at a time). Empty samples
are skipped and counted; unreadable input is a one-line UserError."""
import hashlib
import itertools
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from multissl.errors import UserError, reason

from ..files import hf_splits, locate, split_folders
from ..memory import class_values, describe, given, in_memory, is_array, unpack
from .tokens import Columns, Lazy, stored

TABLES = (".csv", ".tsv", ".parquet", ".jsonl", ".json")
CHUNK = 4096  # samples read (and tokenized) at a time
FORMAT = 1  # what a cached corpus holds; a change makes new cache entries


@dataclass
class Source:
    """A corpus not read yet. read() -> {split: chunks of (values, labels or None)}, the values as the reader finds
    them: a blank, None or NaN one is an empty sample, left out and counted as `what`; anything but a string is an
    error naming `where` and `fix`. `key` says what is read (None: texts in memory, never cached); `name` is where
    the corpus is, for messages."""
    key: str | None
    read: Callable[[], dict[str, Iterable[tuple[list, list | None]]]]
    what: str
    name: str
    where: str = "data.path"
    fix: str = ""


def fingerprint(what, files: Iterable[Path] = ()) -> str:
    """A cache key: `what` (JSON) and each file read by its path, size and modification time."""
    h = hashlib.sha256(json.dumps([FORMAT, what], default=str).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def batches(items: Iterable) -> Iterator[list]:
    """Lists of CHUNK items."""
    items = iter(items)
    while batch := list(itertools.islice(items, CHUNK)):
        yield batch


def chatterbot_root() -> Path:
    import chatterbot_corpus
    return Path(chatterbot_corpus.__file__).parent / "data"


def chatterbot() -> dict:
    """The chatterbot-corpus package's statements, each once: label "<language>", or "english/<topic>" for the
    English ones (the topic is the file)."""
    import yaml
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    texts, labels, seen = [], [], set()
    for lang in sorted(p for p in chatterbot_root().iterdir() if p.is_dir()):
        for f in sorted(lang.glob("*.yml")):
            doc = yaml.load(f.read_text(encoding="utf-8"), Loader=loader) or {}
            for conversation in doc.get("conversations") or []:
                for s in conversation:
                    s = s.strip() if isinstance(s, str) else ""
                    if s and s not in seen:  # a repeated statement would sit in both splits
                        seen.add(s)
                        texts.append(s)
                        labels.append(f"english/{f.stem}" if lang.name == "english" else lang.name)
    return {"train": (texts, labels)}


def default() -> Source:
    files = sorted(chatterbot_root().rglob("*.yml"))
    return Source(fingerprint("chatterbot", files), lambda: {s: [split] for s, split in chatterbot().items()},
                  "empty texts", "the default corpus")


def decode(raw: bytes, path: Path, offset: int = 0) -> str:
    """UTF-8 bytes of `path` that start at `offset` -> text; a one-line error for other bytes or binary data."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {offset + e.start}); convert "
                        f"it, e.g. iconv -f latin1 -t utf-8") from None
    if "\0" in text:
        raise UserError(f"{path} is binary (it holds NUL bytes), not text; point data.path at .txt files or a table")
    return text


def utf8(path: Path) -> str:
    return decode(path.read_bytes(), path)


def lines(path: Path) -> Iterator[str]:
    """The file's lines (every break str.splitlines knows), decoded as they are read: a .txt of any size streams.
    The file is cut after each b"\\n", which is never inside a UTF-8 character nor between \\r and \\n."""
    offset = 0
    with path.open("rb") as f:
        for raw in f:
            yield from decode(raw, path, offset).splitlines()
            offset += len(raw)


def folder(root: Path, skip_bad: bool) -> Source:
    """One sample per .txt file (recursive); its class is its top subfolder below the split folder."""
    where = split_folders(root)
    files = {split: sorted(at.rglob("*.txt")) for split, at in where.items()}
    if not any(files.values()):
        raise UserError(f"no .txt files under {root}; put one text per .txt file (class subfolders for labels), or "
                        f"point data.path at a .txt file with one sample per line or at a table")

    def chunks(split):
        for part in batches(files[split]):
            values = [sample_file(f, skip_bad) for f in part]
            labels = [folder_label(f, where[split]) if v else None for f, v in zip(part, values)]
            yield values, labels if any(lb is not None for lb in labels) else None  # labelled when a kept file is

    return Source(fingerprint(["folder", skip_bad], itertools.chain(*files.values())),
                  lambda: {split: chunks(split) for split in files},
                  "empty or unreadable files" if skip_bad else "empty files", str(root))


def sample_file(f: Path, skip_bad: bool) -> str | None:
    """A file's text stripped; None for an unreadable one when they are skipped."""
    try:
        return utf8(f).strip()
    except UserError:
        if not skip_bad:
            raise
        return None


def folder_label(f: Path, split_root: Path) -> str | None:
    rel = f.relative_to(split_root).parts
    return rel[0] if len(rel) > 1 else None


def column_texts(values, where: str, fix: str) -> tuple[list, list[int]]:
    """Strings and the positions of empty (missing or blank) ones; anything else is an error naming `where`."""
    texts, empty = [], []
    for i, v in enumerate(values):
        if isinstance(v, str) and v.strip():
            texts.append(v.strip())
        elif isinstance(v, str) or v is None or (isinstance(v, float) and v != v):
            empty.append(i)
        else:
            raise UserError(f"{where} holds {type(v).__name__} values, not text; {fix}")
    return texts, empty


def texts_split(values, labels: list | None, where: str, fix: str) -> tuple[tuple, int]:
    """(texts, their labels or None) with empty samples left out, and how many were."""
    texts, empty = column_texts(values, where, fix)
    skip = set(empty)
    return (texts, None if labels is None else [v for i, v in enumerate(labels) if i not in skip]), len(empty)


def check_columns(columns: list, column: str, target: str | None, where: str):
    if column not in columns:
        raise UserError(f"{where} has no column {column!r} (columns: {', '.join(map(str, columns))}); set "
                        f"data.text_column to the column holding the text")
    if target is not None and target not in columns:
        raise UserError(f"data.target={target} is not a column of {where}; columns: {', '.join(map(str, columns))}")


def label_strings(values) -> list:
    """A label column's cells as strings; a missing one is None."""
    return [None if (v is None or v != v) else str(v) for v in values]


def frame(df, column: str, target: str | None, where: str) -> tuple[list, list | None]:
    """A DataFrame's text cells and labels (None without a target)."""
    check_columns(list(df.columns), column, target, where)
    return df[column].tolist(), None if target is None else label_strings(df[target].tolist())


def table(path: Path, column: str, target: str | None) -> Source:
    """A table: a parquet file streamed by row group (its labels read whole), any other read whole."""
    def read():
        if path.suffix.lower() == ".parquet":
            return parquet(path, column, target)
        return [frame(read_table(path), column, target, str(path))]
    return Source(fingerprint(["table", column, target], [path]), lambda: {"train": read()},
                  f"rows with empty {column!r}", str(path), f"column {column!r} of {path}",
                  "point data.text_column at the column holding the strings")


def read_table(path: Path):
    import pandas as pd
    utf8(path)  # a clear error for a file that is not UTF-8 text
    try:
        if path.suffix.lower() in (".csv", ".tsv"):  # the delimiter sniffed as for tables (; tab | too)
            from ..tabular.table import text_format
            sep, _, skip = text_format(path)
            df = pd.read_csv(path, low_memory=False, sep=sep, skiprows=skip)
        else:
            df = pd.read_json(path, lines=path.suffix.lower() == ".jsonl")
    except Exception as e:
        raise UserError(f"cannot read {path}: {reason(e)}; fix the file or export it again") from None
    df.columns = [str(c) for c in df.columns]
    return df


def parquet(path: Path, column: str, target: str | None) -> Iterator[tuple[list, list | None]]:
    """A parquet file's chunks, one batch of a row group at a time; its labels are read whole (as a DataFrame
    converts the column: a missing cell makes an integer column float)."""
    import pandas as pd
    import pyarrow.parquet as pq
    try:
        f = pq.ParquetFile(path)
        names = [n for n in f.schema_arrow.names if not n.startswith("__index_level_")]  # pandas' saved index
        check_columns(names, column, target, str(path))
        labels = None if target is None else label_strings(pd.read_parquet(path, columns=[target])[target].tolist())
        start = 0
        for batch in f.iter_batches(batch_size=CHUNK, columns=[column]):
            values = batch.to_pandas()[column].tolist()
            yield values, None if labels is None else labels[start:start + len(values)]
            start += len(values)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot read {path}: {reason(e)}; fix the file or export it again") from None


def hf(where: str, saved: bool, column: str, target: str | None) -> Source:
    """An HF dataset's splits, streamed in batches (memory-mapped Arrow); their labels are read whole."""
    splits, label = hf_splits(where, saved), {}
    for split, ds in splits.items():
        if column not in ds.column_names:
            raise UserError(f"HF dataset {where} has no column {column!r} (columns: {', '.join(ds.column_names)}); set "
                            f"data.text_column to the string column")
        label[split] = target if target is not None else next((c for c in ("label", "labels") if c in ds.column_names),
                                                                None)
        if label[split] is not None and label[split] not in ds.column_names:
            raise UserError(f"data.target={label[split]} is not a column of HF dataset {where}; columns: "
                            f"{', '.join(ds.column_names)}")
    key = fingerprint(["hf", where, column, target, {s: ds._fingerprint for s, ds in splits.items()}])
    return Source(key, lambda: {s: hf_chunks(ds, column, label[s]) for s, ds in splits.items()},
                  f"rows with empty {column!r}", where, f"column {column!r} of HF dataset {where}",
                  "point data.text_column at the column holding the strings")


def hf_chunks(ds, column: str, label: str | None) -> Iterator[tuple[list, list | None]]:
    labels = None
    if label is not None:
        values = ds.select_columns([label]).to_pandas()[label].tolist()
        if hasattr(ds.features[label], "int2str"):  # a ClassLabel: its names
            values = [ds.features[label].int2str(int(v)) if v is not None and v >= 0 else None for v in values]
        labels = label_strings(values)
    start = 0
    for df in ds.select_columns([column]).to_pandas(batch_size=CHUNK, batched=True):
        values = df[column].tolist()
        yield values, None if labels is None else labels[start:start + len(values)]
        start += len(values)


MEMORY = ("a list of strings (or a Dataset of them), as (texts, labels) for labels, or a pandas DataFrame "
          "(data.text_column, data.target)")


def memory(obj, column: str, target: str | None) -> Source:
    """In-memory text (MEMORY), one chunk; labels stay class ids (-1: none) or strings. Never cached."""
    import pandas as pd
    if isinstance(obj, pd.DataFrame):
        chunk = frame(obj, column, target, "the table in data.path")
        return Source(None, lambda: {"train": [chunk]}, "empty texts", "data.path",
                      f"column {column!r} of the table in data.path",
                      "point data.text_column at the column holding the strings")
    texts, labels = unpack(obj)
    if not (is_array(texts) or isinstance(texts, (list, torch.utils.data.Dataset))):
        raise UserError(f"data.path holds {describe(texts)}; the text domain reads {MEMORY}")
    values = [texts[i] for i in range(len(texts))]
    chunk = (values, class_values(labels, len(values)))
    return Source(None, lambda: {"train": [chunk]}, "empty texts", "data.path", "data.path",
                  f"the text domain reads {MEMORY}")


def source(data: dict) -> Source:
    """The corpus at data.path (None: the embedded one)."""
    path = data.get("path")
    if not given(path):
        return default()
    column, target = str(data.get("text_column") or "text"), data.get("target")
    target = None if target is None else str(target)
    if in_memory(path):
        return memory(path, column, target)
    kind, where = locate(path, "a .txt file, a folder of .txt files, a .csv/.parquet/.jsonl table, a saved HF "
                               "dataset or shards", folders=True, files=True)
    if kind == "shards":
        from .shards import shard_source  # it reads through this module's Source
        return shard_source(where)
    if kind == "folder":
        return folder(where, bool(data.get("skip_bad")))
    if kind in ("saved", "cache"):
        return hf(str(where), kind == "saved", column, target)
    if where.suffix.lower() in TABLES:
        return table(where, column, target)
    if where.suffix.lower() not in (".txt", ".text", ""):
        raise UserError(f"{where} is not a text corpus (readable: .txt with one sample per line, "
                        f"{' '.join(TABLES)} tables, a folder of .txt files, a saved HF dataset)")
    return Source(fingerprint("lines", [where]), lambda: {"train": ((v, None) for v in batches(lines(where)))},
                  "empty lines", str(where))


class Corpus:
    """A corpus's texts per split (UTF-8 end to end: `<split>.text` uint8, `<split>.text_offsets` int64 [n+1]) and
    labels (`<split>.labels` int32 [n]: an index into the split's label names, -1: none), read once from the source
    and cached under its key (in memory for texts in memory)."""

    def __init__(self, source: Source, cache_dir):
        self.key = source.key
        path = None if source.key is None else Path(cache_dir) / "text" / f"corpus-{source.key}"
        self.arrays, info = stored(path, lambda columns: write(source, columns))
        self.sizes, self.names = info["sizes"], info["labels"]
        if info["empty"]:
            print(f"multissl: data: skipped {info['empty']} {source.what}", file=sys.stderr)

    def rows(self, split: str, rows) -> np.ndarray:
        return np.arange(self.sizes[split]) if rows is None else rows

    def texts(self, split: str, rows=None) -> Lazy:
        """The split's texts (those at `rows`), each decoded when read."""
        data, off, rows = self.arrays[f"{split}.text"], self.arrays[f"{split}.text_offsets"], self.rows(split, rows)
        return Lazy(lambda i: data[off[rows[i]]:off[rows[i] + 1]].tobytes().decode("utf-8"), len(rows))

    def labels(self, split: str, rows=None) -> list | None:
        """The split's labels (those at `rows`; None: unlabelled), a label name or None each."""
        names = self.names[split]
        if names is None:
            return None
        return [None if c < 0 else names[c] for c in self.arrays[f"{split}.labels"][self.rows(split, rows)].tolist()]


def write(source: Source, columns: Columns) -> dict:
    """Reads the source into columns: per split, its non-empty texts and their labels."""
    sizes, names, empty = {}, {}, 0
    for split, chunks in source.read().items():
        index, labelled = {}, False
        columns.add_offsets(f"{split}.text_offsets", [])
        columns.add(f"{split}.text", [], np.uint8)
        columns.add(f"{split}.labels", [], np.int32)
        for values, labels in chunks:
            (texts, labels), skipped = texts_split(values, labels, source.where, source.fix)
            data = [t.encode("utf-8") for t in texts]
            columns.add(f"{split}.text", np.frombuffer(b"".join(data), np.uint8), np.uint8)
            columns.add_offsets(f"{split}.text_offsets", [len(d) for d in data])
            codes = [-1 if v is None else index.setdefault(v, len(index)) for v in labels or [None] * len(texts)]
            columns.add(f"{split}.labels", codes, np.int32)
            labelled, empty = labelled or labels is not None, empty + skipped
        sizes[split], names[split] = columns.spec[f"{split}.labels"][1], list(index) if labelled else None
    if not sizes.get("train"):
        raise UserError(f"the corpus at {source.name} has no text in its training split (all {empty} samples empty); "
                        f"point data.path at a corpus with text")
    return {"sizes": sizes, "labels": names, "empty": empty}


def median_words(read: Corpus) -> float:
    """The median number of words (whitespace-separated) of the training split's first CHUNK texts: a glance at the
    corpus to choose a recipe."""
    texts = read.texts("train", np.arange(min(CHUNK, read.sizes["train"])))
    return float(np.median([len(t.split()) for t in texts]))
