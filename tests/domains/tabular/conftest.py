"""Tables and domains for the tabular tests."""
import numpy as np
import pandas as pd
import pytest
import torch

from multissl.domains.tabular import TabularDomain


def helper(fn):
    """fn as a session fixture of its own name: the tests ask for it by parameter and call it (test files
    import nothing from each other under pytest's importlib mode)."""
    return pytest.fixture(scope="session", name=fn.__name__)(lambda: fn)


@helper
def mixed_table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """Every column type the inference distinguishes, with missing cells."""
    r = np.random.default_rng(seed)
    df = pd.DataFrame({
        "height": r.normal(170, 10, n),                      # float -> numeric
        "visits": r.integers(0, 1000, n),                    # integer, many values -> numeric
        "rooms": r.integers(1, 5, n),                        # integer, 4 values -> categorical
        "color": r.choice(["red", "green", "blue"], n).astype(object),  # strings -> categorical
        "member": r.random(n) < 0.5,                         # bool -> categorical
        "label": r.choice(["no", "yes"], n)})
    df.loc[::7, "height"] = np.nan
    df.loc[::5, "color"] = None
    return df


@helper
def csv(tmp_path, df, name="t.csv"):
    df.to_csv(tmp_path / name, index=False)
    return tmp_path / name


@helper
def domain(path=None, **kw):
    data = {"path": str(path) if path else None, **kw.pop("data", {})}
    d = TabularDomain(data=data, **kw)
    d.dataset("train")
    return d


@helper
def kinds(d):
    return {f["name"]: f["kind"] for f in d.features}


@helper
def feature(d, name):
    return next(f for f in d.features if f["name"] == name)


@helper
def hand_encode(df: pd.DataFrame, d: TabularDomain) -> torch.Tensor:
    """Independent reference: numeric (v - mean) / std from pandas' own statistics of the training frame
    (population std), categorical 2 + position in the sorted training values, 1 = missing, 0 = unseen."""
    train = d.dataset("train").frame
    cols = []
    for f in d.features:
        c = f["name"]
        if f["kind"] == "numeric":
            cols.append(((df[c] - train[c].mean()) / train[c].std(ddof=0)).to_numpy(float))
        else:
            vocab = sorted(train[c].dropna().astype(str).unique())
            cols.append([1.0 if pd.isna(v) else (2.0 + vocab.index(str(v)) if str(v) in vocab else 0.0) for v in df[c]])
    return torch.tensor(np.array(cols, dtype=np.float64).T, dtype=torch.float32)


@helper
def one_line(e):
    assert "\n" not in str(e.value)
    return str(e.value)


@helper
def far_row(d):
    """A row whose every value is absent from the training data, so any replaced value is visible."""
    return torch.full((d.num_tokens,), -1e6)


@pytest.fixture(scope="module")
def cancer(domain):
    """The default table (breast_cancer), loaded once per test file; tests only read it."""
    return domain()
