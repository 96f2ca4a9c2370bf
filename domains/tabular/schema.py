"""A table's feature schema, from its training split only: which columns are features, each one's kind (inferred, or
forced by data.numeric / data.categorical) and statistics, and what tokens and views read from it (each feature's
vocabulary size and encoded "missing")."""
import pandas as pd
import torch

from multissl.errors import UserError

from ..features import MISSING
from ..memory import in_memory
from .table import CATEGORICAL, NUMERIC, TABLES, column_list, fit_feature, infer_kind


def names(columns, shown: int = 10, width: int = 60) -> str:
    """Column names for a one-line message: the first `shown`, each cut to `width` characters (a header read
    with the wrong delimiter is one long name), then how many there are."""
    cut = [repr(c) if len(c) <= width else repr(c[:width]) + "..." for c in map(str, list(columns)[:shown])]
    return ", ".join(cut) + (f", ... ({len(columns)} in all)" if len(columns) > shown else "")


def fit_schema(train: pd.DataFrame, data, target: str | None, max_int_categories: int) -> list[dict]:
    """Feature kinds (inferred or data.numeric / data.categorical) and statistics of every column but the target
    and data.drop, training split only; `data`: the run's data section."""
    drop = {*column_list(data.get("drop")), target}
    forced = {**{c: NUMERIC for c in column_list(data.get("numeric"))},
              **{c: CATEGORICAL for c in column_list(data.get("categorical"))}}
    kept = [c for c in train.columns if c not in drop]
    if len(kept) < 2:
        # SCARF and VIME predict features from the other features: with one there is no other, views of a
        # row are draws of unrelated rows and masking hides nothing, so the encoder learns nothing
        path = data.get("path")
        where = "data.path" if in_memory(path) else path or data.get("name") or TABLES[0]
        dropped = column_list(data.get("drop"))
        raise UserError(f"table {where} has {len(kept)} feature column{'' if len(kept) == 1 else 's'} "
                        f"({names(kept) or 'none'}) once data.target and data.drop are left out "
                        f"(its columns: {names(train.columns)}); self-supervision on a table "
                        f"predicts features from the others and needs at least 2: if the file has more, check "
                        f"its delimiter (, ; tab |) and quoting, else add columns"
                        + (f" or take some out of data.drop=[{','.join(dropped)}]" if dropped else ""))
    return [fit_feature(train[c], c, infer_kind(train[c], c, forced.get(c), max_int_categories)) for c in kept]


def vocab_sizes(features: list[dict]) -> list[int]:
    """Per feature: its vocabulary size, 0 for numeric features."""
    return [len(f["vocab"]) if f["kind"] == CATEGORICAL else 0 for f in features]


def missing_values(sizes: list[int]) -> torch.Tensor:
    """[F] the encoded "missing" of every feature (sizes: `vocab_sizes`): NaN (numeric) or id 1 (categorical)."""
    return torch.tensor([MISSING if v else float("nan") for v in sizes], dtype=torch.float32)
