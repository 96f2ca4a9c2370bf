"""Tabular domain: embedded tables, CSV / parquet / HF sources, schema inference and overrides, train-only
statistics, SCARF / SubTab / noise views, VIME masks and losses, feature tokens, DataFrame preprocessing
for export, downstream metrics, and every bad input."""
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
from multissl.domains.tabular import (FeatureTokenizer, TabularDomain, downstream_scores,
                                      feature_reconstruction_loss, hide_subset, mask_prediction_loss,
                                      numeric_noise, scarf_corrupt, vime_loss)
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.export import save_encoder


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


def csv(tmp_path, df, name="t.csv"):
    df.to_csv(tmp_path / name, index=False)
    return tmp_path / name


def domain(path=None, **kw):
    data = {"path": str(path) if path else None, **kw.pop("data", {})}
    d = TabularDomain(data=data, **kw)
    d.dataset("train")
    return d


def kinds(d):
    return {f["name"]: f["kind"] for f in d.features}


def feature(d, name):
    return next(f for f in d.features if f["name"] == name)


@pytest.fixture(scope="module")
def cancer():
    return domain()


# ---- embedded tables ------------------------------------------------------------------------------

def test_default_table_is_breast_cancer_split_80_20_stratified_and_fixed(cancer):
    tr, te = cancer.dataset("train"), cancer.dataset("test")
    assert (len(tr), len(te)) == (455, 114) and cancer.num_tokens == 30 and cancer.num_classes == 2
    assert set(kinds(cancer).values()) == {"numeric"} and "target" not in kinds(cancer)
    whole = (np.concatenate([tr.y, te.y]) == 1).mean()
    assert abs((tr.y.numpy() == 1).mean() - whole) < 0.01 and abs((te.y.numpy() == 1).mean() - whole) < 0.01
    again = TabularDomain(corruption_rate=0.1)  # other hyperparameters do not move the split
    assert torch.equal(again.dataset("test").x, te.x)
    rows = {tuple(r) for r in tr.frame.to_numpy().round(6).tolist()}
    assert not rows & {tuple(r) for r in te.frame.to_numpy().round(6).tolist()} and len(rows) == len(tr)


@pytest.mark.parametrize("name, rows, feats, classes", [("wine", 178, 13, 3), ("iris", 150, 4, 3)])
def test_embedded_tables_by_name(name, rows, feats, classes):
    d = domain(data={"name": name})
    assert len(d.dataset("train")) + len(d.dataset("test")) == rows
    assert d.num_tokens == feats and d.num_classes == classes


def test_unknown_table_name_is_user_error():
    with pytest.raises(UserError, match="data.name=titanic.*breast_cancer, wine, iris"):
        domain(data={"name": "titanic"})


# ---- schema ---------------------------------------------------------------------------------------

def test_inferred_column_types(tmp_path):
    d = domain(csv(tmp_path, mixed_table()), data={"target": "label"})
    assert kinds(d) == {"height": "numeric", "visits": "numeric", "rooms": "categorical",
                        "color": "categorical", "member": "categorical"}
    assert d.task == "classification" and d.classes == ["no", "yes"]


def test_overrides_force_types_and_drop_columns(tmp_path):
    d = domain(csv(tmp_path, mixed_table()), data={"target": "label", "numeric": ["rooms"],
                                                   "categorical": ["visits"], "drop": ["color"]})
    assert kinds(d) == {"height": "numeric", "visits": "categorical", "rooms": "numeric", "member": "categorical"}


def test_max_int_categories_moves_the_integer_threshold(tmp_path):
    d = domain(csv(tmp_path, mixed_table()), max_int_categories=3, data={"target": "label"})
    assert kinds(d)["rooms"] == "numeric"  # 4 distinct values > 3


def test_float_target_is_regression_with_unlabelled_rows(tmp_path):
    df = mixed_table()
    d = domain(csv(tmp_path, df), data={"target": "height"})
    assert d.task == "regression" and d.num_classes is None and "height" not in kinds(d)
    tr = d.dataset("train")
    assert (tr.y == -1).all()
    np.testing.assert_array_equal(tr.target, tr.frame["height"].to_numpy())  # kept for evaluation, NaN too


def test_no_target_leaves_every_column_a_feature(tmp_path):
    d = domain(csv(tmp_path, mixed_table()))
    assert d.task is None and d.num_tokens == 6 and (d.dataset("train").y == -1).all()


def test_statistics_come_from_the_training_split_only(tmp_path):
    from datasets import Dataset, DatasetDict
    tr_df = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan, 6.0], "c": ["a", "b", "a", None, "b"], "y": [0, 1, 0, 1, 0]})
    te_df = pd.DataFrame({"x": [100.0, 200.0], "c": ["zebra", "a"], "y": [1, 0]})
    DatasetDict({"train": Dataset.from_pandas(tr_df), "test": Dataset.from_pandas(te_df)}).save_to_disk(tmp_path / "hf")
    d = domain(tmp_path / "hf", data={"target": "y"})
    present = np.array([1.0, 2.0, 3.0, 6.0])
    assert feature(d, "x")["mean"] == pytest.approx(present.mean())  # 3.0, not pulled up by the test rows
    assert feature(d, "x")["std"] == pytest.approx(math.sqrt(((present - 3.0) ** 2).mean()))
    assert feature(d, "c")["vocab"] == ["a", "b"]  # "zebra" is only in the test split
    s = feature(d, "x")["std"]
    torch.testing.assert_close(d.dataset("train").x[:, 0], torch.tensor([-2 / s, -1 / s, 0.0, math.nan, 3 / s]),
                               equal_nan=True)
    torch.testing.assert_close(d.dataset("train").x[:, 1], torch.tensor([2.0, 3.0, 2.0, 1.0, 3.0]))  # a=2 b=3 missing=1
    torch.testing.assert_close(d.dataset("test").x[:, 1], torch.tensor([0.0, 2.0]))  # unseen -> 0
    assert d.dataset("test").y.tolist() == [1, 0]


def test_integer_categories_match_across_int_float_and_string(tmp_path):
    df = pd.DataFrame({"k": [1, 2, 3, 2, 1, 3] * 3, "v": np.arange(18.0)})
    d = domain(csv(tmp_path, df), data={"categorical": ["k"]}, test_fraction=0.0)
    assert feature(d, "k")["vocab"] == ["1", "2", "3"]
    ask = pd.DataFrame({"k": [2, 2.0, "2", None, 7], "v": [0.0] * 5})
    assert d.preprocess(ask)[:, 0].tolist() == [3.0, 3.0, 3.0, 1.0, 0.0]


# ---- sources --------------------------------------------------------------------------------------

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


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_files_round_trip(tmp_path, fmt):
    df = mixed_table(80)
    path = tmp_path / f"t.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    d = domain(path, data={"target": "label"})
    tr, te = d.dataset("train"), d.dataset("test")
    assert (len(tr), len(te)) == (64, 16)
    torch.testing.assert_close(tr.x, hand_encode(tr.frame, d), equal_nan=True)
    torch.testing.assert_close(te.x, hand_encode(te.frame, d), equal_nan=True)
    assert tr.y.tolist() == [["no", "yes"].index(v) for v in tr.frame["label"]]


def test_csv_and_parquet_give_the_same_schema_and_rows(tmp_path):
    df = mixed_table(50)
    df.to_parquet(tmp_path / "t.parquet")
    a, b = domain(csv(tmp_path, df), data={"target": "label"}), domain(tmp_path / "t.parquet", data={"target": "label"})
    assert a.features == b.features
    torch.testing.assert_close(a.dataset("train").x, b.dataset("train").x, equal_nan=True)


def test_hf_dataset_class_label_is_the_default_target(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict
    def table(n, seed):
        r = np.random.default_rng(seed)
        ds = Dataset.from_dict({"a": r.normal(size=n).tolist(), "kind": r.choice(["x", "y"], n).tolist(),
                                "label": r.integers(0, 3, n).tolist()})
        return ds.cast_column("label", ClassLabel(names=["cat", "dog", "eel"]))
    DatasetDict({"train": table(20, 0), "validation": table(6, 1)}).save_to_disk(tmp_path / "hf")
    d = domain(tmp_path / "hf")
    assert d.target_name == "label" and d.classes == ["cat", "dog", "eel"] and kinds(d) == {"a": "numeric",
                                                                                           "kind": "categorical"}
    assert len(d.dataset("train")) == 20 and len(d.dataset("test")) == 6  # the validation split is held out


# ---- bad inputs -----------------------------------------------------------------------------------

def one_line(e):
    assert "\n" not in str(e.value)
    return str(e.value)


def test_all_missing_column_is_user_error_naming_it(tmp_path):
    df = mixed_table()
    df["empty"] = np.nan
    with pytest.raises(UserError, match=r"'empty' is empty.*data.drop=\[empty\]") as e:
        domain(csv(tmp_path, df))
    one_line(e)


def test_string_in_numeric_column_is_user_error_naming_column_and_value(tmp_path):
    df = mixed_table()
    df["height"] = df["height"].astype(object)
    df.loc[3, "height"] = "n/a?"
    with pytest.raises(UserError, match=r"'height' is numeric but holds 'n/a\?'.*data.categorical=\[height\]"
                                        r".*data.drop=\[height\]") as e:
        domain(csv(tmp_path, df))
    one_line(e)


def test_forcing_a_text_column_numeric_is_user_error(tmp_path):
    with pytest.raises(UserError, match=r"'color' is numeric but holds '(red|green|blue)'"):
        domain(csv(tmp_path, mixed_table()), data={"numeric": ["color"]})


def test_nonexistent_target_is_user_error_listing_the_columns(tmp_path):
    with pytest.raises(UserError, match=r"data.target=price is not a column.*height, visits, rooms, color, member, "
                                        r"label") as e:
        domain(csv(tmp_path, mixed_table()), data={"target": "price"})
    one_line(e)


@pytest.mark.parametrize("key", ["drop", "numeric", "categorical"])
def test_unknown_override_column_is_user_error(tmp_path, key):
    with pytest.raises(UserError, match=f"data.{key} names 'nope', which is not a column"):
        domain(csv(tmp_path, mixed_table()), data={key: ["nope"]})


@pytest.mark.parametrize("name, content", [
    ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4),
    ("notes.txt", b"\x00\x01\x02junk" * 50),
    ("table.csv", b"a,b\n1,2\n\x00\xff\xfe\x00" * 20),
    ("table.parquet", b"PAR1 this is not parquet"),
    ("empty.csv", b""),
])
def test_a_file_that_is_not_a_table_is_user_error_naming_it(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=name.replace(".", r"\.")) as e:
        domain(tmp_path / name)
    one_line(e)


def test_missing_path_and_name_with_path_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        domain(tmp_path / "nothere.csv")
    with pytest.raises(UserError, match="data.name=wine.*unset one"):
        domain(csv(tmp_path, mixed_table()), data={"name": "wine"})


def test_folder_that_is_not_a_saved_dataset_is_user_error(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="cannot load the HF dataset.*folder") as e:
        domain(tmp_path / "folder")
    one_line(e)


def test_hf_name_missing_from_the_local_cache_is_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing may download
    # the libraries read the offline switches at import; an earlier test may have imported them already
    import datasets
    import huggingface_hub.constants as hub
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="cannot load the HF dataset nobody/no-such-table.*local cache") as e:
        domain("hf:nobody/no-such-table")
    one_line(e)


@pytest.mark.parametrize("kw, match", [({"mask_mode": "zeros"}, "mask_mode"),
                                       ({"corruption_rate": 1.5}, "corruption_rate"),
                                       ({"test_fraction": 1.0}, "test_fraction")])
def test_bad_domain_settings_are_user_errors(kw, match):
    with pytest.raises(UserError, match=match):
        TabularDomain(**kw)


def test_cli_takes_the_table_keys():
    cfg = load_config(["domain=tabular", "data.path=t.csv", "data.target=label", "data.numeric=[a,b]",
                       "data.categorical=[c]", "data.drop=[d]"])
    data = dict(cfg.data)
    assert data["target"] == "label" and list(data["numeric"]) == ["a", "b"] and list(data["drop"]) == ["d"]
    assert load_config(["domain=tabular"]).data.drop == [] and load_config(["domain=tabular"]).data.name is None


def test_a_single_column_name_is_a_list_of_one(tmp_path):
    d = domain(csv(tmp_path, mixed_table()), data={"target": "label", "numeric": "rooms", "drop": "color"})
    assert kinds(d)["rooms"] == "numeric" and "color" not in kinds(d)


def test_drop_must_be_a_list_on_the_command_line(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "multissl.train", "domain=tabular", "data.drop=color"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == "multissl: error: data.drop must be a list (like []), got 'color'"


# ---- views ----------------------------------------------------------------------------------------

def far_row(d):
    """A row whose every value is absent from the training data, so any replaced value is visible."""
    return torch.full((d.num_tokens,), -1e6)


def test_scarf_corrupts_exactly_the_count_with_values_from_that_column(cancer):
    train = cancer.dataset("train").x
    x = far_row(cancer)
    for seed in range(5):
        view = cancer.views(x, torch.Generator().manual_seed(seed), 2)[0]
        changed = (view != x).nonzero()[:, 0]
        assert len(changed) == round(0.6 * 30)
        rows = set()
        for j in changed.tolist():
            hit = (train[:, j] == view[j]).nonzero()[:, 0]
            assert len(hit) > 0  # the value is one of column j's training values
            rows |= set(hit.tolist())
        assert len(rows) > 1  # drawn per column (the marginal), not a whole row copied


def test_scarf_reference_on_a_table_of_distinct_values():
    train = torch.arange(50 * 8, dtype=torch.float32).view(50, 8) * 10 + 0.5  # value -> (row, column)
    x = torch.full((8,), -1.0)
    view = scarf_corrupt(x, train, 0.5, torch.Generator().manual_seed(0))
    changed = (view != x).nonzero()[:, 0].tolist()
    assert len(changed) == 4
    for j in changed:
        row, col = divmod(int((view[j] - 0.5) / 10), 8)
        assert col == j and 0 <= row < 50


def test_marginal_draws_follow_the_column_distribution(cancer):
    train = cancer.dataset("train").x
    x = far_row(cancer)
    draws = torch.stack([scarf_corrupt(x, train, 1.0, torch.Generator().manual_seed(s)) for s in range(400)])
    torch.testing.assert_close(draws.mean(0), train.mean(0), atol=0.15, rtol=0)  # standardized: mean ~0, std ~1


def test_subset_hides_exactly_the_count_as_missing(tmp_path):
    d = domain(csv(tmp_path, mixed_table()), data={"target": "label"})
    x = d.dataset("train").x[1]  # row 1: no missing cell
    assert not x.isnan().any() and (x[[2, 3, 4]] != 1).all()
    out = hide_subset(x, d.missing_values, 0.6, torch.Generator().manual_seed(0))
    hidden = [j for j in range(5) if not (out[j] == x[j])]
    assert len(hidden) == 3
    for j in hidden:
        assert math.isnan(out[j]) if kinds(d)[d.features[j]["name"]] == "numeric" else out[j] == 1.0


def test_noise_touches_present_numeric_features_only():
    x = torch.tensor([1.0, float("nan"), 3.0, 2.0])
    numeric = torch.tensor([True, True, True, False])
    out = numeric_noise(x, numeric, 0.5, torch.Generator().manual_seed(0))
    want = x + 0.5 * torch.randn(4, generator=torch.Generator().manual_seed(0))
    assert out[0] == want[0] and out[2] == want[2]
    assert math.isnan(out[1]) and out[3] == 2.0


def test_views_are_a_function_of_the_generator_and_compose(cancer):
    x = cancer.dataset("train").x[0]
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    d = TabularDomain(subset_rate=0.2, noise_std=0.1)
    d.dataset("train")
    a = d.views(x, torch.Generator().manual_seed(1), 2)
    assert torch.rand(1) == before  # the global RNG is untouched
    b = d.views(x, torch.Generator().manual_seed(1), 2)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, equal_nan=True, atol=0, rtol=0)
    assert not torch.equal(a[0].nan_to_num(), a[1].nan_to_num())
    assert all(v.isnan().sum() == 6 for v in a)  # the subset (0.2 x 30) on a row without missing values
    assert torch.equal(d.views(x, torch.Generator().manual_seed(1), 1)[0], x)  # one view: the row itself


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


def test_corrupt_replaces_the_masked_features_only_with_marginal_draws(cancer):
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
    assert "clean" not in plain and torch.equal(plain["views"][1], flagged["views"][1])


def test_corrupt_flag_changes_nothing_for_a_domain_without_the_hook():
    d = ImageDomain()
    base = d.dataset("train")
    a, b = Views(base, d, 5, 2)[3], Views(base, d, 5, 2, corrupt=True)[3]
    assert a.keys() == b.keys() and all(torch.equal(u, v) for u, v in zip(a["views"], b["views"], strict=True))
    assert torch.equal(a["masked"], b["masked"])


# ---- losses ---------------------------------------------------------------------------------------

def ref_recon(pred, target, scored, vocab):
    """Loop reference: mean over scored cells with a known target of the squared error (numeric) or
    -log softmax over the first V_j category logits at the true class (categorical)."""
    total, n = 0.0, 0
    for b in range(target.shape[0]):
        for j in range(target.shape[1]):
            t = target[b, j]
            if not scored[b, j] or math.isnan(t) or (vocab[j] and t < 2):
                continue
            if vocab[j]:
                logits = pred[b, j, 1:1 + vocab[j]]
                total += math.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[int(t) - 2]
            else:
                total += (pred[b, j, 0] - t) ** 2
            n += 1
    return total / max(n, 1)


def ref_bce(logit, label):
    p = 1 / (1 + np.exp(-logit))
    return float(-(label * np.log(p) + (1 - label) * np.log(1 - p)).mean())


def loss_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    vocab = [0, 3, 0, 5, 2]  # numeric, 3-way, numeric, 5-way, 2-way
    b, n, t = 6, 5, 1 + 5 + 1
    target = torch.randn(b, n, generator=g, dtype=torch.float64)
    for j, v in enumerate(vocab):
        if v:
            target[:, j] = torch.randint(0, v + 2, (b,), generator=g).double()  # includes unknown 0, missing 1
    target[0, 0] = target[3, 2] = float("nan")
    pred = torch.randn(b, n, t, generator=g, dtype=torch.float64, requires_grad=True)
    masked = torch.stack([torch.randperm(n, generator=g)[:3] for _ in range(b)])
    return pred, target, masked, vocab


def test_feature_reconstruction_loss_matches_loop_reference():
    pred, target, masked, vocab = loss_case()
    scored = torch.zeros(target.shape, dtype=torch.bool).scatter(1, masked, True)
    got = feature_reconstruction_loss(pred, target, scored, torch.tensor(vocab))
    want = ref_recon(pred.detach().numpy(), target.numpy(), scored.numpy(), vocab)
    assert got.item() == pytest.approx(want, rel=1e-10)
    got.backward()
    assert torch.isfinite(pred.grad).all()  # numeric columns' masked logits do not leak NaN into the gradient
    # logits past a column's own vocabulary do not count
    far = pred.detach().clone()
    far[:, 1, 4:6] = 1e3
    assert feature_reconstruction_loss(far, target, scored, torch.tensor(vocab)).item() == pytest.approx(got.item())


def test_mask_prediction_loss_matches_reference():
    pred, _, masked, _ = loss_case(1)
    was = torch.zeros(6, 5, dtype=torch.bool).scatter(1, masked, True)
    got = mask_prediction_loss(pred[..., -1].detach(), was).item()
    assert got == pytest.approx(ref_bce(pred[..., -1].detach().numpy(), was.numpy().astype(float)), rel=1e-10)


def test_vime_loss_is_reconstruction_plus_weighted_mask_loss():
    pred, target, masked, vocab = loss_case(2)
    pred = pred.detach()
    was = np.zeros((6, 5), bool)
    np.put_along_axis(was, masked.numpy(), True, 1)
    want = ref_recon(pred.numpy(), target.numpy(), was, vocab) + 0.5 * ref_bce(pred[..., -1].numpy(), was.astype(float))
    assert vime_loss(pred, target, masked, torch.tensor(vocab), 0.5).item() == pytest.approx(want, rel=1e-10)


def test_domain_loss_ignores_unmasked_targets(cancer):
    g = torch.Generator().manual_seed(0)
    target = cancer.dataset("train").x[:4].double()
    keep, masked = cancer.mask(4, g)
    pred = torch.randn(4, 30, cancer.target_dim, generator=g, dtype=torch.float64)
    before = cancer.reconstruction_loss(pred, target, masked).item()
    changed = target.clone()
    was = torch.zeros(4, 30, dtype=torch.bool).scatter(1, masked, True)
    changed[~was] = 1e3
    assert cancer.reconstruction_loss(pred, changed, masked).item() == before
    assert cancer.target_dim == 2 and torch.equal(cancer.target(target), target)


def test_drop_mode_scores_reconstruction_only(cancer):
    """In drop mode the decoder sees mask tokens at the masked positions: 'which were masked' is given, so
    the mask-estimation term would be free and is left out."""
    drop = TabularDomain(data={}, mask_mode="drop", state=cancer.state())
    g = torch.Generator().manual_seed(0)
    target = cancer.dataset("train").x[:4].double()
    _, masked = drop.mask(4, g)
    pred = torch.randn(4, 30, drop.target_dim, generator=g, dtype=torch.float64)
    was = torch.zeros(4, 30, dtype=torch.bool).scatter(1, masked, True)
    recon = feature_reconstruction_loss(pred, target, was, torch.tensor(drop.vocab_sizes)).item()
    assert drop.reconstruction_loss(pred, target, masked).item() == pytest.approx(recon, rel=1e-12)
    assert cancer.reconstruction_loss(pred, target, masked).item() > recon  # marginal mode adds the mask term


# ---- tokens ---------------------------------------------------------------------------------------

def test_tokenizer_matches_a_hand_computation():
    torch.manual_seed(0)
    tok = FeatureTokenizer([0, 3, 0, 2], 4)  # numeric, 3-way, numeric, 2-way
    x = torch.tensor([[0.5, 2.0, float("nan"), 3.0], [-1.0, 0.0, 2.0, 1.0]])
    out = tok(x)
    assert out.shape == (2, 4, 4)
    W, M, B, E = tok.weight, tok.missing, tok.bias, tok.embed.weight  # E rows: column 1 ids 0..4, column 3 ids 0..3
    torch.testing.assert_close(out[0, 0], 0.5 * W[0] + B[0])
    torch.testing.assert_close(out[0, 2], M[1] + B[2])  # missing numeric
    torch.testing.assert_close(out[1, 2], 2.0 * W[1] + B[2])
    torch.testing.assert_close(out[0, 1], E[2] + B[1])
    torch.testing.assert_close(out[1, 1], E[0] + B[1])  # unknown id
    torch.testing.assert_close(out[0, 3], E[5 + 3] + B[3])  # column 3's block starts after column 1's 5 ids
    torch.testing.assert_close(out[1, 3], E[5 + 1] + B[3])  # missing id
    assert E.shape[0] == 5 + 4


# ---- export ---------------------------------------------------------------------------------------

@pytest.fixture
def mixed(tmp_path):
    return domain(csv(tmp_path, mixed_table()), data={"target": "label"})


def test_preprocess_handles_unseen_missing_extra_and_reordered_columns(mixed):
    df = pd.DataFrame({"note": ["x", "y", "z"], "member": [True, None, False], "color": ["purple", None, "red"],
                       "rooms": [2, 3, 9], "visits": [10, 20, None], "height": [180.0, np.nan, 150.0]})
    x = mixed.preprocess(df)
    torch.testing.assert_close(x, hand_encode(df, mixed), equal_nan=True)
    assert x[0, 3] == 0 and x[1, 3] == 1 and x[2, 2] == 0  # unseen purple, missing color, unseen 9 rooms
    assert math.isnan(x[1, 0]) and math.isnan(x[2, 1])


def test_preprocess_bad_inputs_name_the_column(mixed):
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


def test_exported_encoder_embeds_a_dataframe(mixed, tmp_path):
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


def test_downstream_regression_reports_rmse(tmp_path):
    r = np.random.default_rng(0)
    df = pd.DataFrame({"a": r.normal(size=200), "b": r.normal(size=200), "c": r.choice(["u", "v"], 200)})
    df["y"] = 3 * df["a"] + (df["c"] == "u") * 2 + 0.1 * r.normal(size=200)
    d = domain(csv(tmp_path, df), data={"target": "y"})
    te = d.dataset("test")
    out = d.downstream_metrics(lambda ds: torch.tensor(ds.target, dtype=torch.float32)[:, None])  # the target itself
    assert out["probe_linear"] < 0.1  # ridge on the target: ~0 error
    assert out["gbdt_raw"] < 0.5 * te.target.std()  # the trees learn y from a and c
    assert out["gbdt_raw_ssl"] >= 0


def test_downstream_scores_against_sklearn_by_hand():
    from sklearn.ensemble import HistGradientBoostingClassifier
    r = np.random.default_rng(1)
    raw = np.c_[r.normal(size=(120, 2)), r.integers(1, 5, 120)].astype(np.float32)  # last column: category ids
    y = ((raw[:, 0] > 0) ^ (raw[:, 2] == 3)).astype(int)
    emb = r.normal(size=(120, 3))
    cat = np.array([False, False, True])
    got = downstream_scores(raw[:90], emb[:90], y[:90], raw[90:], emb[90:], y[90:], cat, True)
    hgb = HistGradientBoostingClassifier(categorical_features=[2], random_state=0).fit(raw[:90], y[:90])
    assert got["gbdt_raw"] == pytest.approx((hgb.predict(raw[90:]) == y[90:]).mean())


def test_no_target_means_no_downstream_metrics(tmp_path):
    d = domain(csv(tmp_path, mixed_table()))
    assert d.downstream_metrics(lambda ds: torch.zeros(len(ds), 2)) == {}


def test_evaluate_cli_reports_downstream_metrics_with_the_exported_target(tmp_path):
    from multissl.evaluate import evaluate_run
    path = csv(tmp_path, mixed_table(80))
    export(domain(path, data={"target": "label"}), tmp_path / "enc")
    out = evaluate_run(tmp_path / "enc", data={"path": str(path)})  # data.target not repeated: the export's
    assert {"knn_acc", "linear_acc", "probe_linear", "gbdt_raw", "gbdt_raw_ssl"} <= set(out)
    assert all(0.0 <= out[k] <= 1.0 for k in ("probe_linear", "gbdt_raw", "gbdt_raw_ssl"))


# ---- through the engine ----------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", ["mae", "simclr"])
def test_mixed_table_with_a_numeric_target_trains_evaluates_and_exports(tmp_path, objective):
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
