"""multissl.estimator.SSLEmbedder: its parameters become multissl.fit's settings, the run folder goes to a
temporary folder (or a new one under runs_dir), transform embeds in batches with fit's column names, input is
checked as scikit-learn checks it (against a stand-in for multissl.fit); then the real thing: a Pipeline on
breast_cancer and scikit-learn's own estimator checks (slow: they pretrain)."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import multissl
from multissl.errors import UserError
from multissl.estimator import SSLEmbedder


class FakeEncoder:
    """embed(rows) -> [b 3]: each row's sum of numbers times 1, 2, 3; remembers the columns it was given."""
    dim = 3

    def __init__(self):
        self.seen = []

    def embed(self, raw: pd.DataFrame) -> torch.Tensor:
        self.seen.append((list(raw.columns), len(raw)))
        total = torch.tensor(raw.select_dtypes("number").fillna(0).sum(1).to_numpy())
        return total[:, None] * torch.tensor([1.0, 2.0, 3.0])


@pytest.fixture
def fits(monkeypatch) -> list[dict]:
    """multissl.fit replaced by a stand-in that records its arguments and makes run.dir (with a file in it)."""
    calls = []

    def fake_fit(**kwargs):
        folder = Path(kwargs["run.dir"])
        assert folder.parent.is_dir() and not folder.exists()  # a new run, not a resumed one
        folder.mkdir()
        (folder / "metrics.jsonl").write_text("{}\n")
        calls.append(kwargs)
        return SimpleNamespace(path=folder, metrics={"step": 5, "loss": 1.5}, encoder=FakeEncoder())
    monkeypatch.setattr(multissl, "fit", fake_fit, raising=False)
    return calls


def table(n: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"age": rng.normal(40, 10, n), "city": rng.choice(["a", "b"], n), "k": np.arange(n)})


def test_parameters_become_the_runs_settings_and_the_run_folder_is_temporary(fits):
    X = table()
    emb = SSLEmbedder(objective="vicreg", encoder="mlp", max_steps=5, batch_size=16, seed=3,
                      overrides={"encoder.dim": 8}).fit(X)
    (call,) = fits
    assert {k: v for k, v in call.items() if k not in ("data", "run.dir")} == {
        "domain": "tabular", "objective": "vicreg", "encoder": "mlp", "trainer.max_steps": 5, "data.batch_size": 16,
        "trainer.seed": 3, "encoder.dim": 8, "domain.test_fraction": 0}
    pd.testing.assert_frame_equal(call["data"], X)
    assert not Path(call["run.dir"]).parent.exists() and emb.run_path_ is None  # removed after fit
    assert emb.metrics_ == {"step": 5, "loss": 1.5} and emb.columns_ == ["age", "city", "k"]
    SSLEmbedder(overrides={"domain.test_fraction": 0.2}).fit(X)
    assert fits[1]["domain.test_fraction"] == 0.2
    SSLEmbedder(domain="image").fit(X)
    assert fits[2].keys() == {"domain", "objective", "encoder", "data", "run.dir"}  # the rest is the recipe's
    assert fits[2]["objective"] is None and fits[2]["encoder"] is None  # the domain's choices, as a bare command


def test_runs_dir_keeps_a_new_run_folder_per_fit(fits, tmp_path):
    emb = SSLEmbedder(runs_dir=str(tmp_path))
    first = emb.fit(table()).run_path_
    second = emb.fit(table()).run_path_
    assert first != second and first.parent == second.parent == tmp_path
    assert (first / "metrics.jsonl").exists() and (second / "metrics.jsonl").exists()


@pytest.mark.parametrize("params, match", [
    ({"max_steps": 5, "overrides": {"trainer.max_steps": 6}}, "trainer.max_steps is set both .* max_steps="),
    ({"runs_dir": ".", "overrides": {"run.dir": "x"}}, "run.dir is set both .* runs_dir="),
    ({"overrides": "encoder.dim=8"}, "must be a dict of dotted keys"),
])
def test_conflicting_or_malformed_settings_are_user_errors(fits, params, match):
    with pytest.raises(UserError, match=match):
        SSLEmbedder(**params).fit(table())
    assert fits == []


def test_transform_embeds_in_batches_with_fits_column_names(fits, monkeypatch):
    monkeypatch.setattr("multissl.estimator.EMBED_ROWS", 4)
    X = table(10)
    emb = SSLEmbedder().fit(X)
    out = emb.transform(X)
    want = X[["age", "k"]].sum(1).to_numpy()[:, None] * [1, 2, 3]
    assert out.shape == (10, 3) and out.dtype == np.float32 and np.allclose(out, want, rtol=1e-6)
    assert emb.encoder_.seen == [(["age", "city", "k"], n) for n in (4, 4, 2)]
    assert list(emb.get_feature_names_out()) == ["sslembedder0", "sslembedder1", "sslembedder2"]
    assert np.array_equal(emb.transform(X.iloc[:3]), out[:3])


def test_arrays_get_column_names_by_position(fits):
    X = np.arange(12.0).reshape(4, 3)
    emb = SSLEmbedder().fit(X)
    assert list(fits[0]["data"].columns) == ["x0", "x1", "x2"] and not hasattr(emb, "feature_names_in_")
    with pytest.warns(UserWarning, match="fitted without feature names"):  # by position
        emb.transform(pd.DataFrame(X, columns=["p", "q", "r"]))
    assert emb.encoder_.seen[-1] == (["x0", "x1", "x2"], 4)


def test_input_is_checked_as_scikit_learn_checks_it(fits):
    X = table()
    with pytest.raises(NotFittedError):
        SSLEmbedder().transform(X)
    emb = SSLEmbedder().fit(X)
    assert list(emb.feature_names_in_) == ["age", "city", "k"] and emb.n_features_in_ == 3
    with pytest.raises(ValueError, match="feature names should match"):
        emb.transform(X[["k", "age", "city"]])
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="X has 2 features, but SSLEmbedder is expecting 3"):
        emb.transform(np.zeros((2, 2)))
    with_nan = X.assign(age=X.age.where(X.k > 2))  # missing cells are data
    assert np.isfinite(emb.transform(with_nan)).all()
    with pytest.raises(ValueError, match="infinity"):
        emb.transform(X.assign(age=np.inf))
    with pytest.raises(ValueError, match="1 sample"):
        SSLEmbedder().fit(X.iloc[:1])
    with pytest.raises(ValueError, match="0 feature"):
        SSLEmbedder().fit(X[[]])


def test_in_a_pipeline_with_pandas_output(fits):
    X, y = table(20), np.arange(20) % 2
    pipe = Pipeline([("embed", SSLEmbedder()), ("clf", LogisticRegression())]).fit(X, y)
    assert pipe.predict(X).shape == (20,)
    out = SSLEmbedder().set_output(transform="pandas").fit_transform(X)
    assert list(out.columns) == ["sslembedder0", "sslembedder1", "sslembedder2"]


# ---- the real multissl.fit: a tiny encoder, a few steps ------------------------------------------------------------
TINY = {"encoder.dim": 16, "encoder.depth": 1, "encoder.heads": 2, "data.num_workers": 0, "trainer.eval_every": 0,
        "trainer.baseline": False}


def tiny(**params) -> SSLEmbedder:
    return SSLEmbedder(**{"max_steps": 5, "batch_size": 16, "overrides": dict(TINY), **params})


@pytest.mark.slow
def test_a_pipeline_pretrains_then_classifies_breast_cancer():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    pipe = Pipeline([("embed", tiny()), ("clf", LogisticRegression(max_iter=1000))]).fit(X_train, y_train)
    embed = pipe.named_steps["embed"]
    assert embed.metrics_["step"] == 5 and embed.run_path_ is None
    out = embed.transform(X_test)
    assert out.shape == (len(X_test), 16) and np.isfinite(out).all()
    assert pipe.score(X_test, y_test) > 0.85  # a linear probe on 16 dimensions of a barely trained encoder


def expected_failures(est) -> dict:
    """The checks that cannot apply to a transformer that pretrains on tables (each with why)."""
    return {"check_fit2d_1feature": "the tabular domain needs 2 columns (it predicts features from the others) and "
                                    "says so in a multissl.errors.UserError naming the fix, not a ValueError"}


@pytest.mark.slow
@parametrize_with_checks([tiny()], expected_failed_checks=expected_failures)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
