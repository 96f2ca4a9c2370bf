"""Tables: embedded tables, CSV / parquet / HF sources, schema inference and overrides, train-only
statistics, the table keys on the command line, and every bad input."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from multissl.cli import load_config
from multissl.domains.tabular import TabularDomain
from multissl.errors import UserError
from multissl.train import main


# ---- embedded tables ------------------------------------------------------------------------------

def test_default_table_is_breast_cancer_split_80_20_stratified_and_fixed(cancer, kinds):
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
def test_embedded_tables_by_name(name, rows, feats, classes, domain):
    d = domain(data={"name": name})
    assert len(d.dataset("train")) + len(d.dataset("test")) == rows
    assert d.num_tokens == feats and d.num_classes == classes


def test_unknown_table_name_is_user_error(domain):
    with pytest.raises(UserError, match="data.name=titanic.*breast_cancer, wine, iris"):
        domain(data={"name": "titanic"})


# ---- schema ---------------------------------------------------------------------------------------

def test_inferred_column_types(tmp_path, csv, domain, kinds, mixed_table):
    d = domain(csv(tmp_path, mixed_table()), data={"target": "label"})
    assert kinds(d) == {"height": "numeric", "visits": "numeric", "rooms": "categorical",
                        "color": "categorical", "member": "categorical"}
    assert d.task == "classification" and d.classes == ["no", "yes"]


def test_overrides_force_types_and_drop_columns(tmp_path, csv, domain, kinds, mixed_table):
    d = domain(csv(tmp_path, mixed_table()), data={"target": "label", "numeric": ["rooms"],
                                                   "categorical": ["visits"], "drop": ["color"]})
    assert kinds(d) == {"height": "numeric", "visits": "categorical", "rooms": "numeric", "member": "categorical"}


def test_max_int_categories_moves_the_integer_threshold(tmp_path, csv, domain, kinds, mixed_table):
    d = domain(csv(tmp_path, mixed_table()), max_int_categories=3, data={"target": "label"})
    assert kinds(d)["rooms"] == "numeric"  # 4 distinct values > 3


def test_float_target_is_regression_with_unlabelled_rows(tmp_path, csv, domain, kinds, mixed_table):
    df = mixed_table()
    d = domain(csv(tmp_path, df), data={"target": "height"})
    assert d.task == "regression" and d.num_classes is None and "height" not in kinds(d)
    tr = d.dataset("train")
    assert (tr.y == -1).all()
    np.testing.assert_array_equal(tr.target, tr.frame["height"].to_numpy())  # kept for evaluation, NaN too


def test_no_target_leaves_every_column_a_feature(tmp_path, csv, domain, mixed_table):
    d = domain(csv(tmp_path, mixed_table()))
    assert d.task is None and d.num_tokens == 6 and (d.dataset("train").y == -1).all()


def test_statistics_come_from_the_training_split_only(tmp_path, domain, feature):
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


def test_integer_categories_match_across_int_float_and_string(tmp_path, csv, domain, feature):
    df = pd.DataFrame({"k": [1, 2, 3, 2, 1, 3] * 3, "v": np.arange(18.0)})
    d = domain(csv(tmp_path, df), data={"categorical": ["k"]}, test_fraction=0.0)
    assert feature(d, "k")["vocab"] == ["1", "2", "3"]
    ask = pd.DataFrame({"k": [2, 2.0, "2", None, 7], "v": [0.0] * 5})
    assert d.preprocess(ask)[:, 0].tolist() == [3.0, 3.0, 3.0, 1.0, 0.0]


# ---- sources --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_files_round_trip(tmp_path, fmt, domain, hand_encode, mixed_table):
    df = mixed_table(80)
    path = tmp_path / f"t.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    d = domain(path, data={"target": "label"})
    tr, te = d.dataset("train"), d.dataset("test")
    assert (len(tr), len(te)) == (64, 16)
    torch.testing.assert_close(tr.x, hand_encode(tr.frame, d), equal_nan=True)
    torch.testing.assert_close(te.x, hand_encode(te.frame, d), equal_nan=True)
    assert tr.y.tolist() == [["no", "yes"].index(v) for v in tr.frame["label"]]


def test_csv_and_parquet_give_the_same_schema_and_rows(tmp_path, csv, domain, mixed_table):
    df = mixed_table(50)
    df.to_parquet(tmp_path / "t.parquet")
    a, b = domain(csv(tmp_path, df), data={"target": "label"}), domain(tmp_path / "t.parquet", data={"target": "label"})
    assert a.features == b.features
    torch.testing.assert_close(a.dataset("train").x, b.dataset("train").x, equal_nan=True)


def test_hf_dataset_class_label_is_the_default_target(tmp_path, domain, kinds):
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

def test_all_missing_column_is_user_error_naming_it(tmp_path, csv, domain, mixed_table, one_line):
    df = mixed_table()
    df["empty"] = np.nan
    with pytest.raises(UserError, match=r"'empty' is empty.*data.drop=\[empty\]") as e:
        domain(csv(tmp_path, df))
    one_line(e)


def test_string_in_numeric_column_is_user_error_naming_column_and_value(tmp_path, csv, domain, mixed_table, one_line):
    df = mixed_table()
    df["height"] = df["height"].astype(object)
    df.loc[3, "height"] = "n/a?"
    with pytest.raises(UserError, match=r"'height' is numeric but holds 'n/a\?'.*data.categorical=\[height\]"
                                        r".*data.drop=\[height\]") as e:
        domain(csv(tmp_path, df))
    one_line(e)


def test_forcing_a_text_column_numeric_is_user_error(tmp_path, csv, domain, mixed_table):
    with pytest.raises(UserError, match=r"'color' is numeric but holds '(red|green|blue)'"):
        domain(csv(tmp_path, mixed_table()), data={"numeric": ["color"]})


def test_nonexistent_target_is_user_error_listing_the_columns(tmp_path, csv, domain, mixed_table, one_line):
    with pytest.raises(UserError, match=r"data.target=price is not a column.*height, visits, rooms, color, member, "
                                        r"label") as e:
        domain(csv(tmp_path, mixed_table()), data={"target": "price"})
    one_line(e)


@pytest.mark.parametrize("content, data, found", [
    ("price\n" + "".join(f"{i}.5\n" for i in range(20)), {}, r"1 feature column \('price'\).*\(its columns: 'price'\)"),
    ("a;b;c\n1;2;3\n4;5;6;7\n8\n", {}, r"1 feature column \('a;b;c'\).*\(its columns: 'a;b;c'\)"),  # nothing fits
    ("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(20)), {"target": "y"}, r"1 feature column \('x'\).*'x', 'y'"),
    ("x,y,id\n" + "".join(f"{i},{i % 2},{i}\n" for i in range(20)), {"target": "y", "drop": ["x", "id"]},
     r"0 feature columns \(none\).*take some out of data.drop=\[x,id\]"),
], ids=["one-column", "ragged-semicolons", "target-second", "all-dropped"])
def test_fewer_than_two_features_is_user_error_naming_table_columns_and_fix(tmp_path, content, data, found, domain,
                                                                            one_line):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(UserError, match=rf"table .*t\.csv has {found}") as e:
        domain(tmp_path / "t.csv", data=data)
    assert "needs at least 2" in one_line(e) and "check its delimiter" in one_line(e)


@pytest.mark.parametrize("key", ["drop", "numeric", "categorical"])
def test_unknown_override_column_is_user_error(tmp_path, key, csv, domain, mixed_table):
    with pytest.raises(UserError, match=f"data.{key} names 'nope', which is not a column"):
        domain(csv(tmp_path, mixed_table()), data={key: ["nope"]})


@pytest.mark.parametrize("name, content", [
    ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4),
    ("notes.txt", b"\x00\x01\x02junk" * 50),
    ("table.csv", b"a,b\n1,2\n\x00\xff\xfe\x00" * 20),
    ("table.parquet", b"PAR1 this is not parquet"),
    ("empty.csv", b""),
])
def test_a_file_that_is_not_a_table_is_user_error_naming_it(tmp_path, name, content, domain, one_line):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=name.replace(".", r"\.")) as e:
        domain(tmp_path / name)
    one_line(e)


def test_missing_path_and_name_with_path_are_user_errors(tmp_path, csv, domain, mixed_table):
    with pytest.raises(UserError, match="does not exist"):
        domain(tmp_path / "nothere.csv")
    with pytest.raises(UserError, match="data.name=wine.*unset one"):
        domain(csv(tmp_path, mixed_table()), data={"name": "wine"})


def test_folder_that_is_not_a_saved_dataset_is_user_error(tmp_path, domain, one_line):
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="cannot load the HF dataset.*folder") as e:
        domain(tmp_path / "folder")
    one_line(e)


def test_hf_name_missing_from_the_local_cache_is_user_error(tmp_path, monkeypatch, domain, one_line):
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


def test_cli_takes_the_table_keys():
    cfg = load_config(["domain=tabular", "data.path=t.csv", "data.target=label", "data.numeric=[a,b]",
                       "data.categorical=[c]", "data.drop=[d]"])
    data = dict(cfg.data)
    assert data["target"] == "label" and list(data["numeric"]) == ["a", "b"] and list(data["drop"]) == ["d"]
    assert load_config(["domain=tabular"]).data.drop == [] and load_config(["domain=tabular"]).data.name is None


def test_a_single_column_name_is_a_list_of_one(tmp_path, csv, domain, kinds, mixed_table):
    d = domain(csv(tmp_path, mixed_table()), data={"target": "label", "numeric": "rooms", "drop": "color"})
    assert kinds(d)["rooms"] == "numeric" and "color" not in kinds(d)


def test_drop_must_be_a_list_on_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as out:  # the CLI's main in-process; tests/engine run `python -m` itself
        main(["domain=tabular", "data.drop=color"])
    stderr = capsys.readouterr().err
    assert out.value.code == 2 and stderr.strip() == "multissl: error: data.drop must be a list (like []), got 'color'"
