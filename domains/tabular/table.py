"""Tables and their schema: reading CSV / parquet / HF datasets / scikit-learn's bundled tables / tables in memory,
inferring each column's kind, fitting its statistics on the training split, and encoding DataFrames into rows.

An encoded row holds, per feature: numeric = (value - mean) / std with NaN for missing; categorical =
the category id as a float, 0 = unknown (reserved: a category never seen in training), 1 = missing,
2.. = the training vocabulary (sorted strings)."""
import csv
import io
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from multissl.errors import UserError, reason

from ..features import FIRST_CATEGORY, MISSING, UNKNOWN
from ..files import hf_splits
from ..memory import describe, is_array, numpy, per_sample, unpack
from ..shards import Records, Shards

NUMERIC, CATEGORICAL = "numeric", "categorical"
TABLES = ("breast_cancer", "wine", "iris")  # scikit-learn's bundled tables (load_<name>), no download
TEXT_DELIMITER = {".csv": ",", ".tsv": "\t"}  # text tables and the delimiter their extension promises
TABLE_EXT = (*TEXT_DELIMITER, ".parquet", ".pq")
DELIMITERS = {",": "','", ";": "';'", "\t": "tabs", "|": "'|'"}  # what a text table may be split on, as said
SNIFF_BYTES = 1 << 16  # enough rows to compare, bounded however large the file
SNIFF_AGREEMENT = 0.9  # share of rows with the header's field count: a few ragged rows do not hide a delimiter
DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
DECIMAL_POINT = re.compile(r"[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?")
BLOCK_ROWS = 65536  # rows per shard item: parquet compresses a block well, and a table is a few items
MIN_STD = 1e-6  # a constant column standardizes to 0 instead of dividing by zero
TRAIN_FIX = "declare it data.categorical=[{c}], drop it with data.drop=[{c}], or blank those cells"
EMBED_FIX = "the encoder was trained with it numeric: convert those values or set them to NaN (missing)"


# ---- reading ----------------------------------------------------------------------------------------
def read_table(path: Path) -> pd.DataFrame:
    """A .csv / .tsv or .parquet file -> DataFrame with string column names; anything else, or a file that
    does not parse as a table, is a one-line UserError naming the file. Text tables are read with the
    delimiter `text_format` finds, said on stderr when it is not the extension's."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_EXT:
        raise UserError(f"{path} is not a table file (readable: {' '.join(TABLE_EXT)}); export it as CSV or "
                        f"parquet, or point data.path at a saved HF dataset folder")
    text = suffix in TEXT_DELIMITER
    if text and is_binary(path):
        raise UserError(f"{path} is binary, not a CSV text table; export the data as CSV or parquet")
    try:  # low_memory=False: types inferred from the whole column, not per chunk
        if text:
            sep, decimal, skip = text_format(path)
            df = pd.read_csv(path, low_memory=False, sep=sep, decimal=decimal, skiprows=skip)
        else:
            df = pd.read_parquet(path)
    except Exception as e:
        raise UserError(f"cannot read table {path}: {reason(e)}; fix the file or export it again as CSV or parquet") \
            from None
    if text and (sep, decimal) != (TEXT_DELIMITER[suffix], "."):
        print(f"multissl: data: {path}: columns separated by {DELIMITERS[sep]}"
              + (", decimal commas" if decimal == "," else ""), file=sys.stderr)
    return named(df, f"table {path}")


def named(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """A table with rows and columns, its column names strings (a shallow copy when they were not)."""
    if df.empty:
        raise UserError(f"{where} has no rows or no columns; point data.path at a table with data")
    if not all(isinstance(c, str) for c in df.columns):
        df = df.copy(deep=False)
        df.columns = [str(c) for c in df.columns]
    return df


MEMORY = ("a pandas DataFrame, a 2-D array [rows, columns] (columns named c0, c1, ...) or a list or Dataset of 1-D "
          "rows, as (table, labels) for a target")


def memory_frames(obj, target: str | None) -> tuple[dict, str | None]:
    """An in-memory table (MEMORY) -> ({"train": DataFrame}, its label column or None), as hf_frames gives. Labels
    given beside the table become the column data.target names ("target" when unset), a target as a file's column
    is: its type says classes or regression."""
    table, labels = unpack(obj)
    if is_array(table) or isinstance(table, (list, torch.utils.data.Dataset)):
        rows = numpy(table) if is_array(table) else stacked(table)
        if rows.ndim != 2:
            raise UserError(f"data.path holds {describe(table)}; the tabular domain reads {MEMORY}")
        table = pd.DataFrame(rows, columns=[f"c{i}" for i in range(rows.shape[1])])
    if not isinstance(table, pd.DataFrame):
        raise UserError(f"data.path holds {describe(table)}; the tabular domain reads {MEMORY}")
    df = named(table, "the table in data.path")
    if labels is None:
        return {"train": df}, None
    column = "target" if target is None else str(target)
    if column in df.columns:
        raise UserError(f"data.path gives labels beside a table that has a column {column!r} already; pass the table "
                        f"alone with data.target={column}, or name the labels' column with data.target")
    return {"train": df.assign(**{column: per_sample(labels, len(df))})}, column


def stacked(rows) -> np.ndarray:
    """A list or Dataset of 1-D rows -> [n F]; rows of other lengths or kinds are a UserError."""
    try:
        return np.stack([numpy(rows[i]) for i in range(len(rows))]) if len(rows) else np.zeros((0, 0))
    except ValueError as e:
        raise UserError(f"data.path holds rows that do not stack into a table ({reason(e)}); the tabular domain reads "
                        f"{MEMORY}") from None


def is_binary(path: Path) -> bool:
    """NUL bytes in the first 8 KiB: no text table has them, and pandas would parse them into junk."""
    with path.open("rb") as f:
        return b"\x00" in f.read(8192)


def text_format(path: Path) -> tuple[str, str, int]:
    """(delimiter, decimal mark, lines to skip) of a text table, from its first SNIFF_BYTES. Spreadsheets
    write an explicit first line "sep=;" that wins; else `sniff_delimiter`, the extension's delimiter first."""
    with path.open("rb") as f:
        raw = f.read(SNIFF_BYTES + 1)
    complete = len(raw) <= SNIFF_BYTES
    sample = raw[:SNIFF_BYTES].decode("utf-8-sig", errors="replace")  # a cut multi-byte character is one junk cell
    first = sample.split("\n", 1)[0].rstrip("\r")
    if first.lower().startswith("sep=") and first[4:] in DELIMITERS:
        sep, skip, sample = first[4:], 1, sample.split("\n", 1)[-1]
    else:
        sep, skip = sniff_delimiter(sample, complete, TEXT_DELIMITER[path.suffix.lower()]), 0
    return sep, decimal_mark(sample, sep, complete), skip


def records(sample: str, sep: str, complete: bool) -> list[list[str]]:
    """The sample's non-blank records split on `sep`, quotes honoured (a quoted cell may hold the delimiter or
    a line break); the last record is left out when the sample cut it. [] when the sample does not parse."""
    try:
        rows = [r for r in csv.reader(io.StringIO(sample), delimiter=sep) if r]
    except csv.Error:  # e.g. a cell longer than the csv module's field limit: not this delimiter's table
        return []
    return rows if complete else rows[:-1]


def sniff_delimiter(sample: str, complete: bool, default: str = ",") -> str:
    """The delimiter among DELIMITERS that splits the header into two or more fields and at least
    SNIFF_AGREEMENT of the sampled rows into as many: `default` when it does (so a table that always read
    keeps reading the same way), else the one that does for the most rows, then with the most fields, then
    in DELIMITERS' order. None does (a one-column table, or no rows to compare): `default`, so a one-column
    file stays one column rather than being cut on a character its values happen to hold."""
    fits = {}
    for sep in DELIMITERS:
        rows = records(sample, sep, complete)
        if len(rows) < 2 or len(rows[0]) < 2:
            continue
        agree = sum(len(r) == len(rows[0]) for r in rows[1:]) / (len(rows) - 1)
        if agree >= SNIFF_AGREEMENT:
            fits[sep] = (agree, len(rows[0]))
    if default in fits or not fits:
        return default
    return max(fits, key=fits.get)  # max keeps the first of equals: DELIMITERS' order


def decimal_mark(sample: str, sep: str, complete: bool) -> str:
    """"," when a table not separated by commas writes numbers with decimal commas (1,5) and never with a
    decimal point: a European spreadsheet export, whose numbers would otherwise read as text categories."""
    if sep == ",":
        return "."
    cells = [c.strip() for r in records(sample, sep, complete)[1:] for c in r]
    commas = any(DECIMAL_COMMA.fullmatch(c) for c in cells)
    return "," if commas and not any(DECIMAL_POINT.fullmatch(c) for c in cells) else "."


def sklearn_table(name: str) -> pd.DataFrame:
    """One of scikit-learn's bundled tables with its label as column "target"."""
    if name not in TABLES:
        raise UserError(f"data.name={name} is not an embedded table; choose one of: {', '.join(TABLES)}")
    import sklearn.datasets
    return getattr(sklearn.datasets, f"load_{name}")(as_frame=True).frame


def hf_frames(path: str, from_disk: bool) -> tuple[dict, str | None]:
    """An HF dataset -> ({split: DataFrame}, its label column or None). ClassLabel columns become their
    names, so they are categorical by dtype whatever their number of classes."""
    splits = hf_splits(path, from_disk)
    import datasets
    feats = splits["train"].features
    named = [k for k, v in feats.items() if isinstance(v, datasets.ClassLabel)]

    def frame(ds):
        df = ds.to_pandas()
        for k in named:
            df[k] = [feats[k].int2str(int(i)) if i >= 0 else None for i in df[k]]
        df.columns = [str(c) for c in df.columns]
        return df

    label = named[0] if named else ("label" if "label" in feats else None)
    return {k: frame(ds) for k, ds in splits.items()}, label


def located_frames(kind: str, where, domain: str = "tabular") -> tuple[dict, str | None]:
    """What files.locate found (a table file, an HF dataset, shards) -> ({split: DataFrame}, the default target)."""
    if kind == "shards":
        return shard_frames(Shards(where, domain))
    return ({"train": read_table(where)}, None) if kind == "file" else hf_frames(str(where), kind == "saved")


def table_records(frames: dict, target: str | None) -> dict[str, Records]:
    """Each split's DataFrame as shard items of the "table" form: blocks of BLOCK_ROWS rows as parquet, every column
    and the index with pandas' dtypes (one empty block for a split without rows), the default target in `info`."""
    def split(df):
        starts = range(0, max(len(df), 1), BLOCK_ROWS)
        return Records("table", len(starts), lambda: (parquet_bytes(df.iloc[a:a + BLOCK_ROWS]) for a in starts),
                       info={"target": target})
    return {name: split(df) for name, df in frames.items()}


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    try:
        df.to_parquet(buf)
    except Exception as e:  # e.g. an object column mixing strings and numbers, which parquet cannot type
        raise UserError(f"cannot write the table as parquet: {reason(e)}; give such a column one type (e.g. "
                        f"strings) or drop it from the table") from None
    return buf.getvalue()


def shard_frames(shards: Shards) -> tuple[dict, str | None]:
    """Shards `table_records` wrote -> ({split: the DataFrame its blocks make, streamed in order}, the default
    target): the frames the table's own reader gave."""
    frames = {s: pd.concat([pd.read_parquet(io.BytesIO(b)) for b in shards.stream(s)]) for s in shards.splits}
    return frames, shards.info.get("target")


# ---- column types and encoding ------------------------------------------------------------------------
def category_strings(s: pd.Series) -> list:
    """Values as the strings naming their category, None for missing. 3, 3.0 and "3" are one category:
    a CSV integer column with a missing cell is read as floats, a user's DataFrame may hold ints."""
    out = []
    for v in s.tolist():
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            out.append(None)
        elif isinstance(v, (bool, np.bool_)):
            out.append(str(bool(v)))
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v))
    return out


def vocabulary(s: pd.Series) -> list[str]:
    return sorted({v for v in category_strings(s) if v is not None})


def numbers(s: pd.Series, column: str, fix: str) -> np.ndarray:
    """A numeric column -> float64 [n], NaN = missing. A present value that is not a finite number is a
    UserError naming the column and the value, with `fix` ({c} = the column)."""
    if pd.api.types.is_numeric_dtype(s):
        v = s.astype(float).to_numpy()
    else:
        v = pd.to_numeric(s.astype(object), errors="coerce").astype(float).to_numpy()
    bad = s.notna().to_numpy() & ~np.isfinite(v)
    if bad.any():
        raise UserError(f"column {column!r} is numeric but holds {s[bad].iloc[0]!r}, which is not a finite number; "
                        + fix.format(c=column))
    return v


def mostly_numbers(s: pd.Series) -> bool:
    """A text column whose present values are mostly, but not all, numbers: numbers with stray markers
    ("?", "n/a"), which would otherwise become a category per distinct number."""
    present = s.dropna()
    parsed = pd.to_numeric(present.astype(object), errors="coerce")
    return len(present) > 0 and parsed.notna().mean() > 0.5 and parsed.isna().any()


def is_categorical(s: pd.Series, max_int_categories: int) -> bool:
    """object / string / category / bool columns, and integer columns with few distinct values."""
    if pd.api.types.is_bool_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype) \
            or pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s):
        return True
    return pd.api.types.is_integer_dtype(s) and s.nunique(dropna=True) <= max_int_categories


def infer_kind(s: pd.Series, column: str, forced: str | None, max_int_categories: int) -> str:
    """NUMERIC or CATEGORICAL for one training column; `forced` (data.numeric / data.categorical) wins."""
    if s.isna().all():
        raise UserError(f"column {column!r} is empty (every value is missing in the training split); "
                        f"drop it with data.drop=[{column}]")
    first = s.dropna().iloc[0]
    if isinstance(first, (list, tuple, dict, set, bytes, np.ndarray)):
        raise UserError(f"column {column!r} holds {type(first).__name__} values, not table cells; drop it with "
                        f"data.drop=[{column}]")
    if forced:
        return forced
    text = pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)
    if text and mostly_numbers(s):
        numbers(s, column, TRAIN_FIX)  # raises, naming a stray value
    return CATEGORICAL if is_categorical(s, max_int_categories) else NUMERIC


def fit_feature(s: pd.Series, column: str, kind: str) -> dict:
    """The statistics of one feature on the training split: mean and std, or the vocabulary."""
    if kind == CATEGORICAL:
        return {"name": column, "kind": CATEGORICAL, "vocab": vocabulary(s)}
    v = numbers(s, column, TRAIN_FIX)
    return {"name": column, "kind": NUMERIC, "mean": float(np.nanmean(v)), "std": max(float(np.nanstd(v)), MIN_STD)}


def encode_column(s: pd.Series, feature: dict, fix: str) -> np.ndarray:
    """One column -> float32 [n] of the encoded row (module docstring)."""
    if feature["kind"] == NUMERIC:
        return ((numbers(s, feature["name"], fix) - feature["mean"]) / feature["std"]).astype(np.float32)
    ids = {v: i + FIRST_CATEGORY for i, v in enumerate(feature["vocab"])}
    return np.array([MISSING if v is None else ids.get(v, UNKNOWN) for v in category_strings(s)], np.float32)


def encode(df: pd.DataFrame, features: list[dict], fix: str) -> torch.Tensor:
    """DataFrame -> encoded rows float32 [n F]; extra columns are ignored, a missing one is a UserError."""
    absent = [f["name"] for f in features if f["name"] not in df.columns]
    if absent:
        names = ", ".join(f["name"] for f in features)
        raise UserError(f"the table has no column {absent[0]!r}" + (f" (nor {len(absent) - 1} more)" if len(absent) > 1
                        else "") + f"; the encoder needs every training column ({names}): add it, NaN = missing")
    cols = [encode_column(df[f["name"]], f, fix) for f in features]
    return torch.from_numpy(np.stack(cols, 1) if cols else np.zeros((len(df), 0), np.float32))


def class_ids(s: pd.Series, classes: list[str]) -> np.ndarray:
    """Target column -> int64 [n] class ids; missing or unseen labels -> -1 (unlabelled)."""
    ids = {c: i for i, c in enumerate(classes)}
    return np.array([ids.get(v, -1) if v is not None else -1 for v in category_strings(s)], np.int64)


def column_list(value) -> list[str]:
    """data.drop / data.numeric / data.categorical: a list of column names, one name, or null."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(c) for c in value]


def split_rows(n: int, strata: np.ndarray | None, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A fixed (seed 0, not the run seed) train/test split of n rows, stratified when `strata` allows."""
    from sklearn.model_selection import train_test_split
    idx = np.arange(n)
    if strata is not None:
        try:  # sklearn refuses strata too small for the split (a class of one row, more classes than test rows)
            return tuple(train_test_split(idx, test_size=test_fraction, random_state=0, stratify=strata))
        except ValueError:
            pass
    return tuple(train_test_split(idx, test_size=test_fraction, random_state=0))


class Rows(torch.utils.data.Dataset):
    """Encoded rows x float32 [n F], class ids y int64 [n] (-1 = none), the numeric target float64 [n]
    (regression; NaN otherwise) and the raw DataFrame they came from."""

    def __init__(self, x: torch.Tensor, y: np.ndarray, target: np.ndarray, frame: pd.DataFrame):
        self.x, self.y, self.target, self.frame = x, torch.from_numpy(y), target, frame

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": int(self.y[i])}

    def take(self, limit: int | None) -> "Rows":
        """At most `limit` rows, evenly spread (None = all)."""
        if limit is None or len(self) <= limit:
            return self
        idx = np.linspace(0, len(self) - 1, limit).astype(int)
        return Rows(self.x[idx], self.y.numpy()[idx], self.target[idx], self.frame.iloc[idx].reset_index(drop=True))

