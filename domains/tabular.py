"""Tabular domain: pandas tables (CSV, parquet, HF datasets; default: scikit-learn's bundled tables) ->
encoded rows float32 [F] -> one token per feature (FT-Transformer). Views: SCARF corruption, SubTab
feature subsets, gaussian noise. Masking: VIME (masked values replaced by draws from their column's
empirical marginal; reconstruct them and predict which features were masked).

An encoded row holds, per feature: numeric = (value - mean) / std with NaN for missing; categorical =
the category id as a float, 0 = unknown (reserved: a category never seen in training), 1 = missing,
2.. = the training vocabulary (sorted strings). Schema and statistics come from the training split only."""
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from multissl.errors import UserError, reason

from .files import hf_splits, locate
from .masking import random_mask

NUMERIC, CATEGORICAL = "numeric", "categorical"
UNKNOWN, MISSING, FIRST_CATEGORY = 0, 1, 2  # categorical ids
TABLES = ("breast_cancer", "wine", "iris")  # scikit-learn's bundled tables (load_<name>), no download
TABLE_EXT = (".csv", ".parquet", ".pq")
MIN_STD = 1e-6  # a constant column standardizes to 0 instead of dividing by zero
HGB_MAX_CATEGORIES = 255  # HistGradientBoosting's native categorical limit (ids < max_bins)
TRAIN_FIX = "declare it data.categorical=[{c}], drop it with data.drop=[{c}], or blank those cells"
EMBED_FIX = "the encoder was trained with it numeric: convert those values or set them to NaN (missing)"


# ---- reading ----------------------------------------------------------------------------------------
def read_table(path: Path) -> pd.DataFrame:
    """A .csv or .parquet file -> DataFrame with string column names; anything else, or a file that
    does not parse as a table, is a one-line UserError naming the file."""
    if path.suffix.lower() not in TABLE_EXT:
        raise UserError(f"{path} is not a table file (readable: {' '.join(TABLE_EXT)}); export it as CSV or "
                        f"parquet, or point data.path at a saved HF dataset folder")
    if path.suffix.lower() == ".csv" and is_binary(path):
        raise UserError(f"{path} is binary, not a CSV text table; export the data as CSV or parquet")
    try:  # low_memory=False: types inferred from the whole column, not per chunk
        df = pd.read_csv(path, low_memory=False) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as e:
        raise UserError(f"cannot read table {path}: {reason(e)}; fix the file or export it again as CSV or parquet") \
            from None
    if df.empty:
        raise UserError(f"table {path} has no rows or no columns; point data.path at a table with data")
    df.columns = [str(c) for c in df.columns]
    return df


def is_binary(path: Path) -> bool:
    """NUL bytes in the first 8 KiB: no text table has them, and pandas would parse them into junk."""
    with path.open("rb") as f:
        return b"\x00" in f.read(8192)


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


# ---- views and masks (x float [F]; all randomness from rng) ---------------------------------------------
def count(rate: float, n: int) -> int:
    return int(round(rate * n))


def pick(n: int, k: int, rng: torch.Generator) -> torch.Tensor:
    """k distinct feature indices out of n."""
    return torch.randperm(n, generator=rng)[:k]


def marginal_draws(train: torch.Tensor, cols: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """train [n F], cols [k] -> [k]: each column's value in its own random training row, a sample of
    that column's empirical marginal (SCARF, VIME)."""
    rows = torch.randint(0, train.shape[0], (len(cols),), generator=rng)
    return train[rows, cols]


def scarf_corrupt(x: torch.Tensor, train: torch.Tensor, rate: float, rng: torch.Generator) -> torch.Tensor:
    """SCARF: exactly round(rate F) features replaced by marginal draws."""
    cols = pick(len(x), count(rate, len(x)), rng)
    out = x.clone()
    out[cols] = marginal_draws(train, cols, rng)
    return out


def hide_subset(x: torch.Tensor, missing: torch.Tensor, rate: float, rng: torch.Generator) -> torch.Tensor:
    """SubTab-style feature subset: exactly round(rate F) features set to their missing value [F]."""
    cols = pick(len(x), count(rate, len(x)), rng)
    out = x.clone()
    out[cols] = missing[cols]
    return out


def numeric_noise(x: torch.Tensor, numeric: torch.Tensor, std: float, rng: torch.Generator) -> torch.Tensor:
    """Gaussian noise (in standard deviations) on the present numeric features; numeric bool [F]."""
    noisy = x + std * torch.randn(len(x), generator=rng)
    return torch.where(numeric & ~x.isnan(), noisy, x)


# ---- masked-modeling losses (pred [b F T]: channel 0 value, 1..V category logits, -1 "was masked") -------
def masked_positions(masked: torch.Tensor, n: int) -> torch.Tensor:
    """masked [b m] indices -> bool [b n]."""
    return torch.zeros(masked.shape[0], n, dtype=torch.bool, device=masked.device).scatter(1, masked, True)


def feature_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, scored: torch.Tensor,
                                vocab_sizes: torch.Tensor) -> torch.Tensor:
    """Mean over the scored cells whose target is known of: squared error of channel 0 (numeric
    features), cross-entropy of the logits of the column's own vocabulary, channels 1..V_j (categorical
    features, target id - 2). target [b F] encoded rows, scored bool [b F], vocab_sizes [F] (0 = numeric).
    Missing targets (NaN, id 1) are not scored. 0 when nothing is scored."""
    b, n = target.shape
    cat = vocab_sizes > 0  # [F]
    known = torch.where(cat, target >= FIRST_CATEGORY, ~target.isnan())  # [b F]
    cells = scored & known
    per = (pred[..., 0] - target.nan_to_num()) ** 2  # [b F]
    v = int(vocab_sizes.max())
    if v > 0:
        # numeric columns get one valid logit so their (discarded) cross-entropy stays finite, gradient too
        allowed = torch.arange(v, device=pred.device) < vocab_sizes.clamp_min(1)[:, None]  # [F V]
        logits = pred[..., 1:1 + v].masked_fill(~allowed, float("-inf"))  # [b F V]
        cls = (target.nan_to_num() - FIRST_CATEGORY).clamp_min(0).long()  # [b F]
        ce = F.cross_entropy(logits.reshape(b * n, v), cls.reshape(-1), reduction="none").view(b, n)
        per = torch.where(cat, ce, per)
    return (per * cells).sum() / cells.sum().clamp_min(1)


def mask_prediction_loss(logit: torch.Tensor, was_masked: torch.Tensor) -> torch.Tensor:
    """VIME's mask estimator: binary cross-entropy of logit [b F] against was_masked bool [b F], all cells."""
    return F.binary_cross_entropy_with_logits(logit, was_masked.to(logit.dtype))


def vime_loss(pred, target, masked, vocab_sizes, mask_weight: float) -> torch.Tensor:
    """Reconstruction of the masked features + mask_weight (VIME's alpha) x the mask estimation loss."""
    was_masked = masked_positions(masked, target.shape[1])
    return (feature_reconstruction_loss(pred, target, was_masked, vocab_sizes)
            + mask_weight * mask_prediction_loss(pred[..., -1], was_masked))


# ---- tokens ---------------------------------------------------------------------------------------------
class FeatureTokenizer(nn.Module):
    """Encoded rows [b F] -> one token per feature [b F d] (FT-Transformer, Gorishniy et al. 2021):
    numeric j: v W_j + b_j, and M_j + b_j when v is missing; categorical j: E[offset_j + id] + b_j, one
    table with a block of ids per column. W_j, b_j and the blocks are per feature, so tokens carry their
    feature's identity and need no position embedding."""

    def __init__(self, vocab_sizes: list[int], dim: int):
        super().__init__()
        cat = torch.tensor([v > 0 for v in vocab_sizes], dtype=torch.bool)
        num_idx, cat_idx = (~cat).nonzero()[:, 0], cat.nonzero()[:, 0]
        cards = torch.tensor([v + FIRST_CATEGORY for v in vocab_sizes if v > 0], dtype=torch.long)
        self.register_buffer("num_idx", num_idx, persistent=False)
        self.register_buffer("cat_idx", cat_idx, persistent=False)
        self.register_buffer("offsets", torch.cumsum(cards, 0) - cards, persistent=False)
        # tokens are built numeric-first; this puts them back in column order
        self.register_buffer("order", torch.cat([num_idx, cat_idx]).argsort(), persistent=False)
        scale = dim ** -0.5
        self.weight = nn.Parameter(torch.empty(len(num_idx), dim).uniform_(-scale, scale))
        self.missing = nn.Parameter(torch.empty(len(num_idx), dim).uniform_(-scale, scale))
        self.bias = nn.Parameter(torch.empty(len(vocab_sizes), dim).uniform_(-scale, scale))
        self.embed = nn.Embedding(int(cards.sum()), dim)
        nn.init.uniform_(self.embed.weight, -scale, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, self.num_idx]  # [b Fn]
        num = v.nan_to_num()[..., None] * self.weight + v.isnan()[..., None] * self.missing  # [b Fn d]
        cat = self.embed(x[:, self.cat_idx].long() + self.offsets)  # [b Fc d]
        return torch.cat([num, cat], 1)[:, self.order] + self.bias  # [b F d]


# ---- the domain -------------------------------------------------------------------------------------------
class TabularDomain:
    name = "tabular"

    def __init__(self, max_int_categories: int = 10, test_fraction: float = 0.2, corruption_rate: float = 0.6,
                 subset_rate: float = 0.0, noise_std: float = 0.0, mask_mode: str = "marginal",
                 mask_ratio: float = 0.3, mask_loss_weight: float = 1.0, data=None, state: dict | None = None):
        for key, v in (("corruption_rate", corruption_rate), ("subset_rate", subset_rate), ("mask_ratio", mask_ratio)):
            if not 0.0 <= v <= 1.0:
                raise UserError(f"domain.{key}={v} must be a fraction of the features, between 0 and 1")
        if not 0.0 <= test_fraction < 1.0:
            raise UserError(f"domain.test_fraction={test_fraction} must be in [0, 1) (0 = no held-out split)")
        if mask_mode not in ("marginal", "drop"):
            raise UserError(f"domain.mask_mode must be marginal (VIME) or drop (MAE), got {mask_mode!r}")
        self.max_int_categories, self.test_fraction = max_int_categories, test_fraction
        self.corruption_rate, self.subset_rate, self.noise_std = corruption_rate, subset_rate, noise_std
        self.mask_mode, self.mask_ratio, self.mask_loss_weight = mask_mode, mask_ratio, mask_loss_weight
        self.data = data or {}
        self.features, self.target_name, self.classes = None, None, None
        self._splits, self._train_x = None, None
        if state:
            self.load_state(state)

    # ---- data -------------------------------------------------------------------------------------------
    def dataset(self, split: str):
        if self._splits is None:
            self._splits = self._load()
            self._train_x = self._splits["train"].x
        return self._splits.get(split)

    def _frames(self) -> tuple[dict, str | None]:
        """{split: raw DataFrame} and the default target column, from data.path or data.name."""
        path, name = self.data.get("path"), self.data.get("name")
        if not path:
            return {"train": sklearn_table(name or TABLES[0])}, "target"
        if name:
            raise UserError(f"data.name={name} picks an embedded table but data.path={path} is set too; unset one")
        kind, where = locate(path, "a .csv or .parquet file or a saved HF dataset folder", folders=False, files=True)
        return ({"train": read_table(where)}, None) if kind == "file" else hf_frames(str(where), kind == "saved")

    def _load(self) -> dict:
        frames, default_target = self._frames()
        whole = frames["train"]
        target = self.data.get("target")  # else the exported one (evaluate.py on new data), else the table's
        target = (self.target_name or default_target) if target is None else str(target)
        columns = list(whole.columns)
        for key in ("drop", "numeric", "categorical"):
            unknown = [c for c in column_list(self.data.get(key)) if c not in columns]
            if unknown:
                raise UserError(f"data.{key} names {unknown[0]!r}, which is not a column; columns: "
                                f"{', '.join(columns)}")
        if target is not None and target not in columns:
            raise UserError(f"data.target={target} is not a column of the table; columns: {', '.join(columns)}")
        self.target_name = target
        if target is not None and self.classes is None:
            # the task and the classes come from the whole table: they stratify the split made next
            categorical = is_categorical(whole[target], self.max_int_categories)
            self.classes = vocabulary(whole[target]) if categorical else []  # [] = regression
        if "test" not in frames and self.test_fraction > 0:
            if len(whole) < 2:
                raise UserError(f"the table has {len(whole)} row; a train/test split needs at least 2 "
                                f"(or set domain.test_fraction=0)")
            strata = class_ids(whole[target], self.classes) if self.classes else None
            tr, te = split_rows(len(whole), strata, self.test_fraction)
            frames = {"train": whole.iloc[tr].reset_index(drop=True), "test": whole.iloc[te].reset_index(drop=True)}
        if self.features is None:
            self.features = self._fit_schema(frames["train"])
        return {k: self._rows(df) for k, df in frames.items()}

    def _fit_schema(self, train: pd.DataFrame) -> list[dict]:
        """Feature kinds (inferred or data.numeric / data.categorical) and statistics, training split only."""
        drop = {*column_list(self.data.get("drop")), self.target_name}
        forced = {**{c: NUMERIC for c in column_list(self.data.get("numeric"))},
                  **{c: CATEGORICAL for c in column_list(self.data.get("categorical"))}}
        features = []
        for c in train.columns:
            if c not in drop:
                kind = infer_kind(train[c], c, forced.get(c), self.max_int_categories)
                features.append(fit_feature(train[c], c, kind))
        if not features:
            raise UserError("no feature columns are left after data.target and data.drop; keep at least one")
        return features

    def _rows(self, df: pd.DataFrame) -> Rows:
        """A split's encoded rows and labels (a split without the target column is unlabelled)."""
        n, t = len(df), self.target_name if self.target_name in df.columns else None
        y = class_ids(df[t], self.classes) if t and self.classes else np.full(n, -1, np.int64)
        fix = "clean the target column or point data.target at another one"
        reg = numbers(df[t], t, fix) if t and not self.classes else np.full(n, np.nan)
        return Rows(encode(df, self.features, TRAIN_FIX), y, reg, df)

    @property
    def task(self) -> str | None:
        if self.target_name is None:
            return None
        return "classification" if self.classes else "regression"

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes else None

    def state(self) -> dict:
        """Schema and statistics: what export saves so `embed(DataFrame)` encodes exactly as training did."""
        return {"features": self.features, "target": self.target_name, "classes": self.classes}

    def load_state(self, s: dict):
        self.features, self.target_name, self.classes = s["features"], s["target"], s["classes"]

    # ---- model input ---------------------------------------------------------------------------------------
    def preprocess(self, raw) -> torch.Tensor:
        """A pandas DataFrame holding the training columns (others are ignored) -> encoded rows [b F].
        Unseen categories -> id 0, missing values (NaN/None) -> NaN or id 1."""
        if not isinstance(raw, pd.DataFrame):
            raise UserError(f"a tabular batch must be a pandas DataFrame with the training columns, got "
                            f"{type(raw).__name__}; wrap it, e.g. pandas.DataFrame(rows)")
        df = raw.rename(columns=str)
        return encode(df, self.features, EMBED_FIX)

    def eval_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def vocab_sizes(self) -> list[int]:
        """Per feature: its vocabulary size, 0 for numeric features."""
        return [len(f["vocab"]) if f["kind"] == CATEGORICAL else 0 for f in self.features]

    @property
    def missing_values(self) -> torch.Tensor:
        """[F] the encoded "missing" of every feature: NaN (numeric) or id 1 (categorical)."""
        return torch.tensor([MISSING if v else float("nan") for v in self.vocab_sizes], dtype=torch.float32)

    # ---- views ---------------------------------------------------------------------------------------------
    def views(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2) -> list[torch.Tensor]:
        """x float [F] -> n_global independently augmented rows [F]: SCARF corruption, then a SubTab
        subset hidden, then gaussian noise. A single view (masked objectives) is the row itself: the
        mask is its corruption (`corrupt`), and the reconstruction target must be the true row."""
        if n_global == 1:
            return [x]
        return [self._augment(x, rng) for _ in range(n_global)]

    def _augment(self, x, rng):
        if self._train_x is None:
            raise RuntimeError("views need the training rows: call dataset('train') first")
        x = scarf_corrupt(x, self._train_x, self.corruption_rate, rng)
        if self.subset_rate:
            x = hide_subset(x, self.missing_values, self.subset_rate, rng)
        if self.noise_std:
            x = numeric_noise(x, torch.tensor([v == 0 for v in self.vocab_sizes]), self.noise_std, rng)
        return x

    # ---- tokens and masking (VIME) -----------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return len(self.features)

    @property
    def target_dim(self) -> int:
        return 1 + max(self.vocab_sizes) + 1  # value, category logits, "was masked" logit

    def embedder(self, dim: int) -> nn.Module:
        return FeatureTokenizer(self.vocab_sizes, dim)

    def mask(self, batch_size: int, rng: torch.Generator):
        """round(mask_ratio F) masked features per row. marginal (VIME): the encoder sees every feature,
        the masked ones replaced by marginal draws (`corrupt`); drop (MAE): it sees the others only."""
        keep, masked = random_mask(batch_size, self.num_tokens, self.mask_ratio, rng)
        if self.mask_mode == "marginal":
            keep = torch.arange(self.num_tokens).repeat(batch_size, 1)  # [b F]
        return keep, masked

    @property
    def drops_masked(self) -> bool:
        """drop: masked features are left out of keep; marginal (VIME): keep is every feature, `corrupt` replaces."""
        return self.mask_mode == "drop"

    def corrupt(self, view: torch.Tensor, masked: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """VIME's corruption: the masked features [m] of view [F] replaced by marginal draws."""
        out = view.clone()
        out[masked] = marginal_draws(self._train_x, masked, rng)
        return out

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return x  # the clean encoded rows [b F]

    def reconstruction_loss(self, pred, target, masked):
        sizes = torch.tensor(self.vocab_sizes, device=target.device)
        # drop mode: the decoder sees mask tokens where features were masked, so "which were masked" is free
        weight = self.mask_loss_weight if self.mask_mode == "marginal" else 0.0
        return vime_loss(pred, target, masked, sizes, weight)

    # ---- evaluation (issue 5 item 6) ---------------------------------------------------------------------------
    def downstream_metrics(self, embed, limit: int | None = None) -> dict:
        """On the held-out split, side by side: `probe_linear` (logistic regression accuracy / ridge RMSE
        on standardized embeddings), `gbdt_raw` (HistGradientBoosting on the encoded features) and
        `gbdt_raw_ssl` (the same on features + embeddings). `embed(dataset) -> [n d]`; `limit` rows per split,
        evenly spread (None = all). Empty without a target or a held-out split."""
        tr, te = self._splits["train"], self._splits.get("test")
        if te is None or self.task is None:
            return {}
        tr, te = (part.take(limit) for part in (tr, te))
        (y_tr, on_tr), (y_te, on_te) = self._labels(tr), self._labels(te)
        if not on_tr.any() or not on_te.any():
            return {}
        cat = np.array([0 < v <= HGB_MAX_CATEGORIES - FIRST_CATEGORY for v in self.vocab_sizes])
        return downstream_scores(tr.x.numpy()[on_tr], embed(tr).numpy()[on_tr], y_tr[on_tr],
                                 te.x.numpy()[on_te], embed(te).numpy()[on_te], y_te[on_te], cat, bool(self.classes))

    def _labels(self, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        """(labels [n], usable bool [n]) of a split: class ids >= 0, or finite numeric targets."""
        if self.classes:
            y = rows.y.numpy()
            return y, y >= 0
        return rows.target, np.isfinite(rows.target)


def downstream_scores(raw_tr, emb_tr, y_tr, raw_te, emb_te, y_te, categorical, classification: bool) -> dict:
    """Accuracy (classification) or RMSE (regression) on the test rows of: a linear model on the
    standardized embeddings, HistGradientBoosting on the raw encoded features (NaN native, `categorical`
    bool [F] columns as categories), and HistGradientBoosting on raw features + embeddings."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def score(model, x_tr, x_te):
        pred = model.fit(x_tr, y_tr).predict(x_te)
        return float((pred == y_te).mean()) if classification else float(np.sqrt(((pred - y_te) ** 2).mean()))

    def gbdt(cat):
        cls = HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor
        return cls(categorical_features=cat if cat.any() else None, random_state=0)

    linear = LogisticRegression(max_iter=1000) if classification else Ridge()
    both_cat = np.concatenate([categorical, np.zeros(emb_tr.shape[1], bool)])
    return {"probe_linear": score(make_pipeline(StandardScaler(), linear), emb_tr, emb_te),
            "gbdt_raw": score(gbdt(categorical), raw_tr, raw_te),
            "gbdt_raw_ssl": score(gbdt(both_cat), np.hstack([raw_tr, emb_tr]), np.hstack([raw_te, emb_te]))}
