"""Tabular domain: settings, VIME masks and the corrupt hook through the data pipeline, DataFrame
preprocessing for export, downstream metrics, and runs through the engine."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import multissl
from multissl.cli import load_config
from multissl.data import Collate, Views
from multissl.domains.image import ImageDomain
from multissl.domains.tabular import TabularDomain
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.export import save_encoder

from tiny import item_views


@pytest.mark.parametrize("kw, match", [({"mask_mode": "zeros"}, "mask_mode"),
                                       ({"corruption_rate": 1.5}, "corruption_rate"),
                                       ({"test_fraction": 1.0}, "test_fraction")])
def test_bad_domain_settings_are_user_errors(kw, match):
    with pytest.raises(UserError, match=match):
        TabularDomain(**kw)


# ---- VIME masks and the corrupt hook ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["marginal", "drop"])
def test_mask_counts(mode):
    d = TabularDomain(mask_mode=mode)
    d.dataset("train")
    keep, masked = d.mask(5, torch.Generator().manual_seed(0))
    assert masked.shape == (5, 9)  # round(0.3 x 30)
    for k, m in zip(keep, masked, strict=True):
        assert len(set(m.tolist())) == 9
        if mode == "marginal":
            assert k.tolist() == list(range(30))  # the encoder sees every feature
        else:
            assert sorted(k.tolist() + m.tolist()) == list(range(30))


def test_corrupt_replaces_the_masked_features_only_with_marginal_draws(cancer, far_row):
    train = cancer.dataset("train").x
    x = far_row(cancer)
    masked = torch.tensor([0, 5, 29])
    out = cancer.corrupt(x, masked, torch.Generator().manual_seed(0))
    assert (out != x).nonzero()[:, 0].tolist() == [0, 5, 29]
    assert all((train[:, j] == out[j]).any() for j in (0, 5, 29))


def test_data_pipeline_corrupts_view_zero_and_keeps_the_clean_row(cancer):
    base = cancer.dataset("train")
    item = Views(base, cancer, 3, 1, corrupt=True)[7]
    row = base[Views(base, cancer, 3, 1).sample_index(7)]["x"]
    assert torch.equal(item["clean"], row)  # the mae target: the row itself
    diff = (item["views"][0] != row).nonzero()[:, 0]
    assert set(diff.tolist()) <= set(item["masked"].tolist()) and len(diff) > 0
    batch = Collate(cancer)([Views(base, cancer, 3, 1, corrupt=True)[k] for k in range(4)])
    assert batch["clean"].shape == (4, 30) and batch["views"][0].shape == (4, 30)
    plain = Views(base, cancer, 3, 2)[7]  # contrastive objectives: no corruption, no clean
    flagged = Views(base, cancer, 3, 2, corrupt=True)[7]
    assert "clean" not in plain and torch.equal(item_views(cancer, plain)[1], flagged["views"][1])


def test_corrupt_flag_changes_nothing_for_a_domain_without_the_hook():
    d = ImageDomain()
    base = d.dataset("train")
    a, b = Views(base, d, 5, 2)[3], Views(base, d, 5, 2, corrupt=True)[3]
    assert a.keys() == b.keys() and all(torch.equal(u, b["drawn"][k]) for k, u in a["drawn"].items())
    assert torch.equal(a["masked"], b["masked"])


# ---- export ---------------------------------------------------------------------------------------

@pytest.fixture
def mixed(tmp_path, csv, domain, mixed_table):
    return domain(csv(tmp_path, mixed_table()), data={"target": "label"})


def test_preprocess_handles_unseen_missing_extra_and_reordered_columns(mixed, hand_encode):
    df = pd.DataFrame({"note": ["x", "y", "z"], "member": [True, None, False], "color": ["purple", None, "red"],
                       "rooms": [2, 3, 9], "visits": [10, 20, None], "height": [180.0, np.nan, 150.0]})
    x = mixed.preprocess(df)
    torch.testing.assert_close(x, hand_encode(df, mixed), equal_nan=True)
    assert x[0, 3] == 0 and x[1, 3] == 1 and x[2, 2] == 0  # unseen purple, missing color, unseen 9 rooms
    assert math.isnan(x[1, 0]) and math.isnan(x[2, 1])


def test_preprocess_bad_inputs_name_the_column(mixed, one_line):
    df = mixed.dataset("test").frame.drop(columns=["visits"])
    with pytest.raises(UserError, match="no column 'visits'") as e:
        mixed.preprocess(df)
    one_line(e)
    bad = mixed.dataset("test").frame.astype({"height": object})
    bad.loc[2, "height"] = "tall"
    with pytest.raises(UserError, match="'height' is numeric but holds 'tall'.*trained with it numeric"):
        mixed.preprocess(bad)
    with pytest.raises(UserError, match="pandas DataFrame"):
        mixed.preprocess(np.zeros((2, 5)))


def test_state_round_trip_is_json_and_encodes_identically(mixed):
    state = json.loads(json.dumps(mixed.state()))
    fresh = TabularDomain(state=state)
    df = mixed.dataset("test").frame
    torch.testing.assert_close(fresh.preprocess(df), mixed.preprocess(df), equal_nan=True)
    assert fresh.num_tokens == mixed.num_tokens and fresh.target_dim == mixed.target_dim


def export(d: TabularDomain, folder) -> Encoder:
    """An untrained tiny encoder exported as a run would (weights + the domain's state)."""
    from omegaconf import OmegaConf
    torch.manual_seed(0)
    enc = Encoder(d, dim=16, depth=1, heads=2)
    dom_cfg = OmegaConf.create({"_target_": "multissl.domains.tabular.TabularDomain"})
    enc_cfg = OmegaConf.create({"_target_": "multissl.encoder.Encoder", "dim": 16, "depth": 1, "heads": 2})
    save_encoder(folder, enc, dom_cfg, enc_cfg, d.state())
    return enc


def test_exported_encoder_embeds_a_dataframe(mixed, tmp_path, hand_encode):
    enc = export(mixed, tmp_path / "enc")
    loaded = multissl.load_encoder(tmp_path / "enc")
    df = pd.DataFrame({"height": [np.nan, 171.0], "visits": [3, None], "rooms": [1, 4], "color": ["mauve", None],
                       "member": [True, False]})
    got = loaded.embed(df)
    with torch.no_grad():
        want = enc.eval()(hand_encode(df, mixed))[1]
    assert got.shape == (2, 16) and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# ---- downstream metrics ------------------------------------------------------------------------------

def test_downstream_metrics_keys_ranges_and_what_they_measure(cancer):
    oracle = lambda ds: torch.nn.functional.one_hot(ds.y, 2).float()  # noqa: E731 - the label itself
    good = cancer.downstream_metrics(oracle)
    assert set(good) == {"probe_linear", "gbdt_raw", "gbdt_raw_ssl"}
    assert good["probe_linear"] == 1.0 and good["gbdt_raw_ssl"] == 1.0  # label-perfect embeddings
    assert 0.9 < good["gbdt_raw"] < 1.0  # breast_cancer's raw features alone: ~0.94
    noise = cancer.downstream_metrics(lambda ds: torch.randn(len(ds), 4, generator=torch.Generator().manual_seed(0)))
    assert noise["probe_linear"] < 0.75 and noise["gbdt_raw"] == good["gbdt_raw"]  # chance ~0.63 (majority)


def test_downstream_regression_reports_rmse(tmp_path, csv, domain):
    r = np.random.default_rng(0)
    df = pd.DataFrame({"a": r.normal(size=200), "b": r.normal(size=200), "c": r.choice(["u", "v"], 200)})
    df["y"] = 3 * df["a"] + (df["c"] == "u") * 2 + 0.1 * r.normal(size=200)
    d = domain(csv(tmp_path, df), data={"target": "y"})
    te = d.dataset("test")
    out = d.downstream_metrics(lambda ds: torch.tensor(ds.target, dtype=torch.float32)[:, None])  # the target itself
    assert out["probe_linear"] < 0.1  # ridge on the target: ~0 error
    assert out["gbdt_raw"] < 0.5 * te.target.std()  # the trees learn y from a and c
    assert out["gbdt_raw_ssl"] >= 0


def test_no_target_means_no_downstream_metrics(tmp_path, csv, domain, mixed_table):
    d = domain(csv(tmp_path, mixed_table()))
    assert d.downstream_metrics(lambda ds: torch.zeros(len(ds), 2)) == {}


def test_evaluate_cli_reports_downstream_metrics_with_the_exported_target(tmp_path, csv, domain, mixed_table):
    from multissl.evaluate import evaluate_run
    path = csv(tmp_path, mixed_table(80))
    export(domain(path, data={"target": "label"}), tmp_path / "enc")
    out = evaluate_run(tmp_path / "enc", data={"path": str(path)})  # data.target not repeated: the export's
    assert {"knn_acc", "linear_acc", "probe_linear", "gbdt_raw", "gbdt_raw_ssl"} <= set(out)
    assert all(0.0 <= out[k] <= 1.0 for k in ("probe_linear", "gbdt_raw", "gbdt_raw_ssl"))


# ---- through the engine ----------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", ["mae", "simclr"])
def test_mixed_table_with_a_numeric_target_trains_evaluates_and_exports(tmp_path, objective, csv, kinds, mixed_table):
    """Categorical, boolean and missing cells and a regression target (visits: many integers) through a
    real run: finite losses, RMSE metrics at the end, and the export encodes and embeds new rows with an
    unseen category and missing values."""
    from multissl.train import run
    path = csv(tmp_path, mixed_table(120).drop(columns=["label"]))
    folder = run(load_config([
        "domain=tabular", f"objective={objective}", f"data.path={path}", "data.target=visits",
        "encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "data.batch_size=32", "trainer.max_steps=3",
        "trainer.log_every=1", "trainer.eval_every=0", f"run.dir={tmp_path / 'run'}"]))
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    final = next(r for r in reversed(rows) if "gbdt_raw" in r)
    visits = mixed_table(120)["visits"]
    for key in ("probe_linear", "gbdt_raw", "gbdt_raw_ssl"):  # RMSE, in visits: 0 < rmse < a few stds
        assert 0 < final[key] < 3 * visits.std()
    enc = multissl.load_encoder(folder)
    assert enc.domain.task == "regression" and kinds(enc.domain)["color"] == "categorical"
    new = pd.DataFrame({"height": [np.nan, 171.0], "rooms": [1, 9], "color": ["mauve", None], "member": [True, None]})
    x = enc.domain.preprocess(new)
    assert x[0, 2] == 0 and x[1, 2] == 1 and math.isnan(x[0, 0])  # unseen, missing, missing
    got = enc.embed(new)
    assert got.shape == (2, 16) and torch.isfinite(got).all()
