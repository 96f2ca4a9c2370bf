"""Text tables as spreadsheets write them: the delimiter found among , ; tab | (quotes honoured), .tsv files,
an explicit "sep=" line, decimal commas, one-column files left whole, and a semicolon CSV through a run."""
import math

import numpy as np
import pandas as pd
import pytest

from multissl.domains.tabular import read_table
from multissl.domains.tabular.table import sniff_delimiter

TABLE = pd.DataFrame({"age": [31.5, 42.0, 27.25, 55.0], "city": ["Paris", "Lyon; Rhône", "Nice, Côte", "Lille|Nord"],
                      "kids": [0, 2, 1, 3]})


def assert_table(df: pd.DataFrame, want: pd.DataFrame = TABLE):
    assert list(df.columns) == list(want.columns)
    for c in want.columns:
        assert df[c].tolist() == want[c].tolist(), c


@pytest.mark.parametrize("sep, said", [(";", "';'"), ("\t", "tabs"), ("|", "'|'")])
def test_semicolon_tab_and_pipe_tables_read_their_columns_and_say_the_delimiter(tmp_path, capsys, sep, said):
    path = tmp_path / "t.csv"
    TABLE.to_csv(path, sep=sep, index=False)  # pandas quotes the cells that hold the delimiter
    assert_table(read_table(path))
    assert capsys.readouterr().err.strip() == f"multissl: data: {path}: columns separated by {said}"


def test_comma_table_with_quoted_semicolons_stays_comma_and_says_nothing(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text('name,notes,n\n"Smith; J.","a;b;c",1\n"Doe; K.","d;e",2\n"Roe","f;g;h;i",3\n')
    assert_table(read_table(path), pd.DataFrame({"name": ["Smith; J.", "Doe; K.", "Roe"],
                                                 "notes": ["a;b;c", "d;e", "f;g;h;i"], "n": [1, 2, 3]}))
    assert capsys.readouterr().err == ""


def test_tsv_files_are_tables(tmp_path, capsys):
    path = tmp_path / "t.tsv"
    TABLE.to_csv(path, sep="\t", index=False)
    assert_table(read_table(path))
    assert capsys.readouterr().err == ""  # tabs are what .tsv promises


def test_spreadsheet_sep_line_and_decimal_commas(tmp_path, capsys):
    path = tmp_path / "excel.csv"
    path.write_text("sep=;\nprice;name;qty\n1,5;a,b;2\n-0,25;c;3\n10;d;4\n")
    assert_table(read_table(path), pd.DataFrame({"price": [1.5, -0.25, 10.0], "name": ["a,b", "c", "d"],
                                                 "qty": [2, 3, 4]}))
    assert capsys.readouterr().err.strip().endswith("columns separated by ';', decimal commas")
    path.write_text("price;qty\n1.5;2\n3,5;3\n")  # a decimal point anywhere: commas are not decimal marks
    assert read_table(path)["price"].tolist() == ["1.5", "3,5"]


@pytest.mark.parametrize("sample", [
    "notes\nhello, world\nsee; you\nthis | that\n",    # one column whose values hold delimiters
    "a;b\n1;2\n3;4;5;6\n7\n8;9;1;2\n",                  # no delimiter splits the rows alike
    "a;b\n",                                           # a header only: nothing to compare
])
def test_the_comma_stays_when_no_delimiter_fits(sample):
    assert sniff_delimiter(sample, complete=True) == ","


def test_a_few_ragged_rows_and_a_cut_last_row_do_not_hide_the_delimiter():
    rows = "".join(f"{i};{i + 1};{i + 2}\n" for i in range(30))
    assert sniff_delimiter("a;b;c\n" + rows + "1;2\n", complete=True) == ";"  # one short row in 31
    assert sniff_delimiter("a;b;c\n" + rows + "1;2", complete=False) == ";"  # the sample ends mid-row
    assert sniff_delimiter("a\tb\n1\t2\n", complete=True, default="\t") == "\t"


def test_semicolon_csv_trains_a_step(tiny, tmp_path):
    rng = np.random.default_rng(0)
    n = 80
    df = pd.DataFrame({"age": rng.normal(40, 10, n).round(2), "city": rng.choice(["Köln", "Lyon; Rhône"], n),
                       "score": rng.normal(0, 1, n).round(3), "churned": rng.choice(["yes", "no"], n)})
    path = tmp_path / "customers.csv"
    df.to_csv(path, sep=";", decimal=",", index=False)
    folder = tiny.run("domain=tabular", "objective=simclr", f"data.path={path}", "data.target=churned",
                      "trainer.max_steps=2")
    losses = [r["loss"] for r in tiny.metrics(folder) if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    import multissl
    features = {f["name"]: f["kind"] for f in multissl.load_encoder(folder).domain.features}
    assert features == {"age": "numeric", "city": "categorical", "score": "numeric"}
