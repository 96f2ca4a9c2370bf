"""Where text comes from, as {split: (texts, labels or None)}: the embedded chatterbot corpus; a .txt file (one
sample per line); a folder of .txt files (one sample per file, class subfolders label them, train/ and test/
honoured); a .csv / .tsv / .parquet / .jsonl table (data.text_column, data.target; a text table's delimiter sniffed
as for tables: , ; tab |); an HF dataset (a saved folder or hf:<name>) with a string column; texts in memory
(`memory`). Empty samples are skipped and counted; unreadable input is a one-line UserError."""
import sys
from pathlib import Path

import torch

from multissl.errors import UserError, reason

from ..files import hf_splits, locate, split_folders
from ..memory import class_values, describe, given, in_memory, is_array, unpack

TABLES = (".csv", ".tsv", ".parquet", ".jsonl", ".json")


def chatterbot() -> dict:
    """The chatterbot-corpus package's statements, each once: label "<language>", or "english/<topic>" for the
    English ones (the topic is the file)."""
    import chatterbot_corpus
    import yaml
    root = Path(chatterbot_corpus.__file__).parent / "data"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    texts, labels, seen = [], [], set()
    for lang in sorted(p for p in root.iterdir() if p.is_dir()):
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


def utf8(path: Path) -> str:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); convert it, e.g. "
                        f"iconv -f latin1 -t utf-8") from None
    if "\0" in text:
        raise UserError(f"{path} is binary (it holds NUL bytes), not text; point data.path at .txt files or a table")
    return text


def lines(path: Path) -> tuple[list[str], int]:
    """One sample per non-empty line, and the count of empty lines."""
    rows = [s.strip() for s in utf8(path).splitlines()]
    kept = [s for s in rows if s]
    return kept, len(rows) - len(kept)


def folder(root: Path, skip_bad: bool) -> tuple[dict, int]:
    """One sample per .txt file (recursive); its class is its top subfolder below the split folder."""
    out, empty, found = {}, 0, 0
    for split, where in split_folders(root).items():
        files = sorted(where.rglob("*.txt"))
        found += len(files)
        texts, labels = [], []
        for f in files:
            try:
                s = utf8(f).strip()
            except UserError:
                if not skip_bad:
                    raise
                empty += 1
                continue
            if not s:
                empty += 1
                continue
            texts.append(s)
            rel = f.relative_to(where).parts
            labels.append(rel[0] if len(rel) > 1 else None)
        out[split] = (texts, labels if any(lb is not None for lb in labels) else None)
    if not found:
        raise UserError(f"no .txt files under {root}; put one text per .txt file (class subfolders for labels), or "
                        f"point data.path at a .txt file with one sample per line or at a table")
    return out, empty


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


def frame_split(df, column: str, target: str | None, where: str) -> tuple[tuple, int]:
    if column not in df.columns:
        raise UserError(f"{where} has no column {column!r} (columns: {', '.join(map(str, df.columns))}); set "
                        f"data.text_column to the column holding the text")
    if target is not None and target not in df.columns:
        raise UserError(f"data.target={target} is not a column of {where}; columns: {', '.join(map(str, df.columns))}")
    labels = None
    if target is not None:
        labels = [None if (v is None or v != v) else str(v) for v in df[target].tolist()]
    return texts_split(df[column].tolist(), labels, f"column {column!r} of {where}",
                       "point data.text_column at the column holding the strings")


def texts_split(values, labels: list | None, where: str, fix: str) -> tuple[tuple, int]:
    """(texts, their labels or None) with empty samples left out, and how many were."""
    texts, empty = column_texts(values, where, fix)
    skip = set(empty)
    return (texts, None if labels is None else [v for i, v in enumerate(labels) if i not in skip]), len(empty)


def table(path: Path, column: str, target: str | None) -> tuple[dict, int]:
    import pandas as pd
    utf8(path) if path.suffix.lower() != ".parquet" else None  # a clear error for non-UTF-8 text files
    try:
        if path.suffix.lower() in (".csv", ".tsv"):  # the delimiter sniffed as for tables (; tab | too)
            from ..tabular.table import text_format
            sep, _, skip = text_format(path)
            df = pd.read_csv(path, low_memory=False, sep=sep, skiprows=skip)
        elif path.suffix.lower() == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_json(path, lines=path.suffix.lower() == ".jsonl")
    except Exception as e:
        raise UserError(f"cannot read {path}: {reason(e)}; fix the file or export it again") from None
    df.columns = [str(c) for c in df.columns]
    split, empty = frame_split(df, column, target, str(path))
    return {"train": split}, empty


def hf(where: str, saved: bool, column: str, target: str | None) -> tuple[dict, int]:
    out, empty = {}, 0
    for split, ds in hf_splits(where, saved).items():
        if column not in ds.column_names:
            raise UserError(f"HF dataset {where} has no column {column!r} (columns: {', '.join(ds.column_names)}); set "
                            f"data.text_column to the string column")
        label = target if target is not None else next((c for c in ("label", "labels") if c in ds.column_names), None)
        if label is not None and label not in ds.column_names:
            raise UserError(f"data.target={label} is not a column of HF dataset {where}; columns: "
                            f"{', '.join(ds.column_names)}")
        df = ds.select_columns([column] + ([label] if label else [])).to_pandas()
        if label is not None and hasattr(ds.features[label], "int2str"):  # a ClassLabel: its names
            df[label] = [ds.features[label].int2str(int(v)) if v is not None and v >= 0 else None for v in df[label]]
        out[split], n = frame_split(df, column, label, f"HF dataset {where}")
        empty += n
    return out, empty


MEMORY = ("a list of strings (or a Dataset of them), as (texts, labels) for labels, or a pandas DataFrame "
          "(data.text_column, data.target)")


def memory(obj, column: str, target: str | None) -> tuple[dict, int]:
    """In-memory text (MEMORY) -> ({"train": (texts, labels or None)}, empty samples left out) as a file gives;
    labels stay class ids (-1: none) or strings."""
    import pandas as pd
    if isinstance(obj, pd.DataFrame):
        split, empty = frame_split(obj, column, target, "the table in data.path")
        return {"train": split}, empty
    texts, labels = unpack(obj)
    if not (is_array(texts) or isinstance(texts, (list, torch.utils.data.Dataset))):
        raise UserError(f"data.path holds {describe(texts)}; the text domain reads {MEMORY}")
    values = [texts[i] for i in range(len(texts))]
    split, empty = texts_split(values, class_values(labels, len(values)), "data.path",
                               f"the text domain reads {MEMORY}")
    return {"train": split}, empty


def load(data: dict) -> dict:
    """{split: (texts, labels or None)} from data.path (None: the embedded corpus); says how many empty samples were
    skipped."""
    path = data.get("path")
    if not given(path):
        return chatterbot()
    column, target = str(data.get("text_column") or "text"), data.get("target")
    target = None if target is None else str(target)
    if in_memory(path):
        (splits, empty), what = memory(path, column, target), "empty texts"
    else:
        splits, empty, what = files(path, data, column, target)
    if empty:
        print(f"multissl: data: skipped {empty} {what}", file=sys.stderr)
    if not splits.get("train", ([],))[0]:
        where = "data.path" if in_memory(path) else path
        raise UserError(f"the corpus at {where} has no text in its training split (all {empty} samples empty); point "
                        f"data.path at a corpus with text")
    return splits


def files(path, data: dict, column: str, target: str | None) -> tuple[dict, int, str]:
    """The splits at a path, the count of empty samples left out, and what they were."""
    kind, where = locate(path, "a .txt file, a folder of .txt files, a .csv/.parquet/.jsonl table or a saved HF "
                               "dataset", folders=True, files=True)
    if kind == "folder":
        splits, empty = folder(where, bool(data.get("skip_bad")))
        what = "empty or unreadable files" if data.get("skip_bad") else "empty files"
    elif kind == "file" and where.suffix.lower() in TABLES:
        (splits, empty), what = table(where, column, target), f"rows with empty {column!r}"
    elif kind == "file":
        if where.suffix.lower() not in (".txt", ".text", ""):
            raise UserError(f"{where} is not a text corpus (readable: .txt with one sample per line, "
                            f"{' '.join(TABLES)} tables, a folder of .txt files, a saved HF dataset)")
        texts, empty = lines(where)
        splits, what = {"train": (texts, None)}, "empty lines"
    else:
        (splits, empty), what = hf(str(where), kind == "saved", column, target), f"rows with empty {column!r}"
    return splits, empty, what
