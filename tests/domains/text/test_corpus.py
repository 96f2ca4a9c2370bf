"""Where text comes from: the embedded corpus, a .txt file, a folder of .txt files, tables and HF datasets; and a
one-line error for each bad input."""
import pandas as pd
import pytest

from multissl.domains.text import TextDomain
from multissl.errors import UserError

WORDS = ["the cat sat on the mat", "a dog ran in the park", "birds sing at dawn", "rain falls on the roof",
         "the sun is bright today", "we read a long book", "fish swim in the sea", "snow covers the hills"]


def domain(tmp_path, path, **data):
    return TextDomain(vocab_size=200, cache_dir=str(tmp_path / "cache"), data={"path": str(path), **data})


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_the_default_corpus_has_languages_and_english_topics_and_a_fixed_split():
    d = TextDomain()
    tr, te = d.dataset("train"), d.dataset("test")
    assert len(tr) > 8000 and len(te) > 2000
    assert "english/food" in d.classes and "spanish" in d.classes and "english" not in d.classes
    assert not set(tr.texts) & set(te.texts)  # each statement once, so none is in both splits
    again = TextDomain()
    assert again.dataset("test").texts == te.texts and again.dataset("test").y == te.y


def test_a_txt_file_is_one_sample_per_line_and_empty_lines_are_counted(tmp_path, capsys):
    f = tmp_path / "corpus.txt"
    f.write_text("\n".join(WORDS[:4]) + "\n\n   \n" + "\n".join(WORDS[4:]) + "\n", encoding="utf-8")
    d = domain(tmp_path, f)
    n = len(d.dataset("train")) + len(d.dataset("test"))
    assert n == len(WORDS) and d.num_classes is None
    assert "skipped 2 empty lines" in capsys.readouterr().err
    assert set(d.dataset("train").texts) | set(d.dataset("test").texts) == set(WORDS)


def test_the_tokenizer_learns_from_a_bounded_evenly_spread_sample_of_the_training_texts(tmp_path, monkeypatch):
    import multissl.domains.text.domain as text_domain
    seen, real = [], text_domain.cached
    monkeypatch.setattr(text_domain, "TOKENIZER_TEXTS", 3)
    monkeypatch.setattr(text_domain, "cached", lambda kind, size, lower, texts, cache: seen.extend(texts) or
                        real(kind, size, lower, texts, cache))
    f = tmp_path / "corpus.txt"
    f.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    d = domain(tmp_path, f)
    train = list(d.dataset("train").texts)
    spread = [train[0], train[(len(train) - 1) // 2], train[-1]]  # first, middle and last: evenly spread
    assert len(train) > 3 and seen == spread


def test_a_folder_gives_one_sample_per_file_with_class_subfolders_and_its_own_splits(tmp_path, capsys):
    root = tmp_path / "docs"
    for split in ("train", "test"):
        for c, texts in (("animals", WORDS[:2] + WORDS[6:7]), ("weather", WORDS[2:4] + WORDS[7:])):
            (root / split / c).mkdir(parents=True)
            for i, t in enumerate(texts):
                (root / split / c / f"{i}.txt").write_text(f"{t}\nsecond line of {c}", encoding="utf-8")
    (root / "train" / "animals" / "empty.txt").write_text("  \n", encoding="utf-8")
    d = domain(tmp_path, root)
    tr, te = d.dataset("train"), d.dataset("test")
    assert d.classes == ["animals", "weather"] and len(tr) == 6 and len(te) == 6
    assert all("second line" in t for t in tr.texts)  # a file is one sample, every line of it
    assert sorted(tr.y) == [0, 0, 0, 1, 1, 1]
    assert "skipped 1 empty files" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".csv", ".csv;", ".tsv", ".parquet", ".jsonl"])
def test_tables_read_the_text_column_and_the_target(tmp_path, suffix, capsys):
    """A semicolon-separated .csv (a European spreadsheet's export) and a .tsv read their columns as a comma .csv."""
    df = pd.DataFrame({"body": WORDS + [None, ""], "topic": ["a", "b"] * 5, "n": range(10)})
    f = tmp_path / f"t{suffix.rstrip(';')}"
    {".csv": lambda: df.to_csv(f, index=False), ".csv;": lambda: df.to_csv(f, index=False, sep=";"),
     ".tsv": lambda: df.to_csv(f, index=False, sep="\t"), ".parquet": lambda: df.to_parquet(f),
     ".jsonl": lambda: df.to_json(f, orient="records", lines=True)}[suffix]()
    d = domain(tmp_path, f, text_column="body", target="topic")
    tr, te = d.dataset("train"), d.dataset("test")
    assert len(tr) + len(te) == len(WORDS) and d.classes == ["a", "b"]
    label = dict(zip(WORDS, ["a", "b"] * 4))
    assert all(d.classes[y] == label[t] for t, y in zip(tr.texts + te.texts, tr.y + te.y))
    assert "skipped 2 rows with empty 'body'" in capsys.readouterr().err


def test_a_saved_hf_dataset_with_a_class_label(tmp_path):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["calm", "wild"])})
    ds = datasets.Dataset.from_dict({"text": WORDS, "label": [0, 1] * 4}, features=feats)
    datasets.DatasetDict({"train": ds, "test": ds.select(range(4))}).save_to_disk(tmp_path / "hf")
    d = domain(tmp_path, tmp_path / "hf")
    d.dataset("train")
    assert d.classes == ["calm", "wild"] and len(d.dataset("train")) == 8 and len(d.dataset("test")) == 4


# ---- bad input: one line naming the file or column and the fix ---------------------------------------------------
def test_a_file_that_is_not_utf8_is_named(tmp_path):
    f = tmp_path / "latin.txt"
    f.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(UserError, match="latin.txt is not UTF-8 text.*iconv") as e:
        domain(tmp_path, f).dataset("train")
    one_line(e)
    root = tmp_path / "folder" / "c"
    root.mkdir(parents=True)
    (root / "ok.txt").write_text("fine", encoding="utf-8")
    (root / "bad.txt").write_bytes(b"\xff\xfe broken")
    with pytest.raises(UserError, match="bad.txt is not UTF-8"):
        domain(tmp_path, tmp_path / "folder").dataset("train")
    d = domain(tmp_path, tmp_path / "folder", skip_bad=True)  # skipped and counted instead
    assert d.dataset("train").texts == ["fine"] and d.dataset("test") is None  # one text: no held-out split


def test_an_empty_corpus_is_refused(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(UserError, match="has no text") as e:
        domain(tmp_path, f).dataset("train")
    one_line(e)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UserError, match="no .txt files under"):
        domain(tmp_path, tmp_path / "nothing").dataset("train")


def test_a_missing_text_column_names_the_columns(tmp_path):
    f = tmp_path / "t.csv"
    pd.DataFrame({"review": WORDS}).to_csv(f, index=False)
    with pytest.raises(UserError, match="no column 'text' \\(columns: review\\).*data.text_column") as e:
        domain(tmp_path, f).dataset("train")
    one_line(e)


def test_a_non_string_column_is_refused(tmp_path):
    f = tmp_path / "t.csv"
    pd.DataFrame({"text": range(8)}).to_csv(f, index=False)
    with pytest.raises(UserError, match="column 'text' of .* holds int values, not text") as e:
        domain(tmp_path, f).dataset("train")
    one_line(e)


def test_a_binary_file_is_refused(tmp_path):
    f = tmp_path / "blob.txt"
    f.write_bytes(b"abc\x00def\n")
    with pytest.raises(UserError, match="blob.txt is binary"):
        domain(tmp_path, f).dataset("train")
