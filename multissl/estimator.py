"""A scikit-learn transformer around `multissl.fit`: `SSLEmbedder().fit(X)` pretrains an encoder on the rows of X
(self-supervised: y is ignored) and `transform(X)` embeds rows with it, so pretraining is one step of a Pipeline:

    Pipeline([("embed", SSLEmbedder(max_steps=200)), ("clf", LogisticRegression())]).fit(X_train, y_train)

X is a table: a DataFrame (its columns as they are: numbers, categories, missing cells) or a 2-D array of numbers
(columns x0, x1, …). Every setting not given here is the recipe's (configs/), as on the command line."""
import tempfile
import uuid
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from multissl.errors import UserError

EMBED_ROWS = 1024  # rows per embedding batch in transform: bounded memory whatever the size of X
# fit learns from every row of X, as scikit-learn's fits do, rather than holding some out for the run's evaluation
ALL_ROWS = {"tabular": {"domain.test_fraction": 0}}


class SSLEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Pretrains a multissl encoder on X in `fit`, embeds rows in `transform` -> [n dim].

    domain, objective, encoder: registry names (as `domain=` … on the command line); objective, encoder None = the
    domain's choice for the data, else the config's default (as a command that names none). max_steps, batch_size,
    seed: trainer.max_steps, data.batch_size, trainer.seed (None = the recipe's).
    overrides: any other settings by dotted key, e.g. {"encoder.dim": 64, "optim.base_lr": 1e-3}; the tabular
    domain trains on every row (domain.test_fraction 0) unless they say otherwise.
    runs_dir: a folder that keeps each fit's run folder (metrics, checkpoints, export); None = a temporary folder,
    removed once the encoder is in memory.

    Fitted: encoder_ (multissl's ExportedEncoder), metrics_ (the run's final metrics row), run_path_ (None without
    runs_dir), n_features_in_, feature_names_in_ (DataFrames with string column names), columns_ (the column
    names the encoder knows: a DataFrame's, else x0, x1, …)."""

    def __init__(self, domain: str = "tabular", objective: str | None = None, encoder: str | None = None,
                 max_steps: int | None = None, batch_size: int | None = None, seed: int | None = None,
                 overrides: dict | None = None, runs_dir: str | None = None):
        self.domain, self.objective, self.encoder = domain, objective, encoder
        self.max_steps, self.batch_size, self.seed = max_steps, batch_size, seed
        self.overrides, self.runs_dir = overrides, runs_dir

    def fit(self, X, y=None):
        """Pretrains on the rows of X; y is ignored (self-supervised)."""
        import multissl  # at call time: the library entry point

        table = self._table(X, reset=True)
        keep = self.runs_dir is not None
        with nullcontext(self.runs_dir) if keep else tempfile.TemporaryDirectory(prefix="multissl-") as parent:
            folder = Path(parent) / f"{self.domain}-{self.objective or 'default'}-{uuid.uuid4().hex[:8]}"  # no resume
            run = multissl.fit(**self._choices(), data=table, **self._settings(folder))
            self.encoder_ = run.encoder  # read before a temporary folder goes
            self.metrics_ = dict(run.metrics)
            self.run_path_ = Path(run.path) if keep else None
        self._n_features_out = int(self.encoder_.dim)
        return self

    def transform(self, X) -> np.ndarray:
        """X's rows -> their embeddings [n dim] (float32), EMBED_ROWS at a time."""
        check_is_fitted(self, "encoder_")
        table = self._table(X, reset=False)
        rows = [self.encoder_.embed(table.iloc[i:i + EMBED_ROWS]) for i in range(0, len(table), EMBED_ROWS)]
        return np.concatenate([r.float().cpu().numpy() for r in rows]).reshape(len(table), self._n_features_out)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a missing cell is a token of its own
        tags.transformer_tags.preserves_dtype = []  # embeddings are the encoder's float32 whatever X's dtype
        return tags

    # ---- helpers ----------------------------------------------------------------------------------------
    def _choices(self) -> dict:
        """The registry picks `multissl.fit` takes by name; an unset objective or encoder leaves the domain's choice."""
        return {"domain": self.domain, "objective": self.objective, "encoder": self.encoder}

    def _settings(self, folder: Path) -> dict:
        """overrides + the named parameters (those that are set) + run.dir; a key given both ways is an error."""
        if self.overrides is not None and not isinstance(self.overrides, dict):
            raise UserError(f"SSLEmbedder(overrides=...) must be a dict of dotted keys, e.g. "
                            f"{{'encoder.dim': 64}}, got {type(self.overrides).__name__}")
        named = {"trainer.max_steps": self.max_steps, "data.batch_size": self.batch_size, "trainer.seed": self.seed,
                 "run.dir": str(folder)}
        named = {k: v for k, v in named.items() if v is not None}
        overrides = dict(self.overrides or {})
        both = sorted(set(named) & set(overrides))
        if both:
            where = {"run.dir": "runs_dir", "trainer.max_steps": "max_steps", "data.batch_size": "batch_size",
                     "trainer.seed": "seed"}
            raise UserError(f"SSLEmbedder: {both[0]} is set both in overrides and as {where[both[0]]}=; "
                            f"set it in one place")
        return {**ALL_ROWS.get(self.domain, {}), **overrides, **named}

    def _table(self, X, reset: bool) -> pd.DataFrame:
        """X checked as scikit-learn checks input (its width and feature names against fit's) -> a DataFrame with
        fit's column names, by position: a DataFrame's own, else x0, x1, …"""
        min_rows = 2 if reset else 1  # training compares rows with each other
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, reset=reset, skip_check_array=True)  # its width and column names
            if X.shape[1] == 0:
                raise ValueError(f"X has 0 feature(s) ({len(X)} rows): SSLEmbedder needs at least one column")
            # the checks an array gets (rows, infinite numbers), on the numeric columns only
            check_array(X.select_dtypes("number"), ensure_all_finite="allow-nan", ensure_min_samples=min_rows,
                        ensure_min_features=0)
            names, table = [str(c) for c in X.columns], X
        else:
            x = validate_data(self, X, reset=reset, dtype="numeric", ensure_all_finite="allow-nan",
                              ensure_min_samples=min_rows)
            names, table = [f"x{i}" for i in range(x.shape[1])], pd.DataFrame(x)
        if reset:
            self.columns_ = names
        return table.set_axis(self.columns_, axis=1)
