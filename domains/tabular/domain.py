"""Tabular domain: pandas tables (CSV, parquet, HF datasets; default: scikit-learn's bundled tables) ->
encoded rows float32 [F] (`table`) -> one token per feature (FT-Transformer, `FeatureTokenizer`). Views:
SCARF corruption, SubTab feature subsets, gaussian noise. Masking: VIME (masked values replaced by draws
from their column's empirical marginal; reconstruct them and predict which features were masked).
Schema and statistics come from the training split only.

The class holds the recipe (its constructor), the data, the state, and thin members over `table` (reading and
encoding), `schema`, `views`, `masking` and `downstream` (held-out metrics).

Tables are held in memory, whatever they are read from (a file, an HF dataset, shards: their blocks concatenated):
the DataFrame as read, each split's encoded rows float32 [rows x features] (4 bytes a cell, one column per feature),
and the training rows once more on each training device (the views' and VIME's donor rows). A table trains when its
DataFrame plus these matrices fit in host memory and its training matrix in device memory; for a larger one, train on
a sample of its rows. There is no size check: the DataFrame, read first, is usually the larger part already (8 bytes
a numeric cell, more for text)."""
import numpy as np
import pandas as pd
import torch
from torch import nn

from multissl.data import sample_views
from multissl.errors import UserError

from .. import raw
from ..features import FeatureTokenizer
from ..files import locate, say_unseen
from ..memory import in_memory
from . import downstream, masking
from .schema import fit_schema, missing_values, vocab_sizes
from .table import (EMBED_FIX, TABLES, TRAIN_FIX, Rows, category_strings, class_ids, column_list, encode,
                    is_categorical, located_frames, memory_frames, numbers, sklearn_table, split_rows, table_records,
                    vocabulary)
from .views import apply_views, draw_view


WHAT = "a .csv or .parquet file, a saved HF dataset folder or shards"


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
        self._splits, self._train_x, self._on_device = None, None, {}
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
        if in_memory(path):
            return memory_frames(path, self.data.get("target"))
        if not path:
            return {"train": sklearn_table(name or TABLES[0])}, "target"
        if name:
            raise UserError(f"data.name={name} picks an embedded table but data.path={path} is set too; unset one")
        return located_frames(*locate(path, WHAT, folders=False, files=True), self.name)

    @staticmethod
    def records(data: dict) -> dict:
        """data.path's table as shard items (table.table_records): the DataFrames read from it, whole; data.target,
        data.drop, data.numeric and data.categorical apply when the shards are read, as for the file."""
        return table_records(*located_frames(*locate(data.get("path"), WHAT, folders=False, files=True)))

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
            self.features = fit_schema(frames["train"], self.data, self.target_name, self.max_int_categories)
        return {k: self._rows(df, k) for k, df in frames.items()}

    def _rows(self, df: pd.DataFrame, split: str = "train") -> Rows:
        """A split's encoded rows and labels (a split without the target column is unlabelled)."""
        n, t = len(df), self.target_name if self.target_name in df.columns else None
        if t and self.classes and split != "train":
            say_unseen(category_strings(df[t]), set(self.classes), f"the {split} split")
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

    @property
    def headline(self) -> tuple:
        """The linear probe on the embeddings: accuracy (a proportion) for a class target, RMSE for a numeric one."""
        return "probe_linear", bool(self.classes), bool(self.classes)

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

    def raw_features(self, x: torch.Tensor, pad=None) -> torch.Tensor:
        """The raw-column baseline: each number (0 when missing) with a missing flag, each category one-hot."""
        return raw.table_rows(x, self.vocab_sizes)

    @property
    def vocab_sizes(self) -> list[int]:
        """Per feature: its vocabulary size, 0 for numeric features."""
        return vocab_sizes(self.features)

    @property
    def missing_values(self) -> torch.Tensor:
        """[F] the encoded "missing" of every feature: NaN (numeric) or id 1 (categorical)."""
        return missing_values(self.vocab_sizes)

    # ---- views ---------------------------------------------------------------------------------------------
    def views(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2) -> list[torch.Tensor]:
        """x float [F] -> n_global independently augmented rows [F]: SCARF corruption, then a SubTab
        subset hidden, then gaussian noise. A single view (masked objectives) is the row itself: the
        mask is its corruption (`corrupt`), and the reconstruction target must be the true row."""
        return sample_views(self, self.draw(x, rng, n_global))

    def draw(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2) -> dict:
        """x float [F] -> the row and each view's replaced features with their donor rows, hidden subset and noise
        [v F] (no change at all for a single view)."""
        if self._train_x is None:
            raise RuntimeError("views need the training rows: call dataset('train') first")
        f, n = len(x), len(self._train_x)
        views = [draw_view(f, n, self.corruption_rate, self.subset_rate, bool(self.noise_std), rng)
                 for _ in range(n_global)] if n_global > 1 else [draw_view(f, n, 0.0, 0.0, False, rng)]
        return {"row": x, **{k: torch.stack([v[k] for v in views]) for k in views[0]}}

    def apply(self, d: dict) -> list[torch.Tensor]:
        """draw's tensors for a batch, on any device -> the views [b F]: index replacement from the training
        rows (kept on each device once)."""
        dev = d["row"].device
        if dev not in self._on_device:
            numeric = torch.tensor([v == 0 for v in self.vocab_sizes])
            self._on_device[dev] = tuple(t.to(dev) for t in (self._train_x, self.missing_values, numeric))
        train, missing, numeric = self._on_device[dev]
        out = apply_views(d["row"], train, missing, numeric, d["replace"], d["donor"], d["hide"], d["noise"],
                          self.noise_std)
        return list(out.unbind(1))

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
        return masking.feature_mask(batch_size, self.num_tokens, self.mask_ratio, self.mask_mode, rng)

    @property
    def drops_masked(self) -> bool:
        """drop: masked features are left out of keep; marginal (VIME): keep is every feature, `corrupt` replaces."""
        return self.mask_mode == "drop"

    def corrupt(self, view: torch.Tensor, masked: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """VIME's corruption: the masked features [m] of view [F] replaced by marginal draws."""
        return masking.corrupt(view, masked, self._train_x, rng)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return x  # the clean encoded rows [b F]

    def reconstruction_loss(self, pred, target, masked):
        """VIME's: the masked features reconstructed, plus (marginal mode) which were masked predicted."""
        return masking.reconstruction_loss(pred, target, masked, self.vocab_sizes, self.mask_mode,
                                           self.mask_loss_weight)

    # ---- evaluation ----------------------------------------------------------------------------------------------
    def downstream_metrics(self, embed, limit: int | None = None) -> dict:
        """On the held-out split, side by side: `probe_linear` (logistic regression accuracy / ridge RMSE
        on standardized embeddings), `gbdt_raw` (HistGradientBoosting on the encoded features) and
        `gbdt_raw_ssl` (the same on features + embeddings). `embed(dataset) -> [n d]`; `limit` rows per split,
        evenly spread (None = all). Empty without a target or a held-out split."""
        tr, te = self._splits["train"], self._splits.get("test")
        if te is None or self.task is None:
            return {}
        return downstream.downstream_metrics(tr, te, embed, self.vocab_sizes, self.classes, limit)

