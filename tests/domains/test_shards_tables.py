"""Shards of the text and tabular domains: written from a corpus or a table, they read back as the same samples,
order, labels and classes (the text corpus; the table's DataFrame), so a run from them is the run from the files."""
import numpy as np
import pandas as pd
import pytest

from multissl.domains.tabular.table import located_frames
from multissl.domains.text import corpus
from multissl.errors import UserError
from multissl.shards import convert

WORDS = "red green blue cat dog bird runs sleeps jumps over under near the a small big".split()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "cache"))  # records and training read corpora into it


def sentence(rng, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS, n))


def text_table(tmp_path, n: int = 80):
    """A CSV corpus with a class column, blank texts (left out) and a missing label (unlabelled)."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"text": [sentence(rng) for _ in range(n)], "label": rng.choice(["x", "y", "z"], n)})
    df.loc[[3, 17], "text"] = ["", "   "]
    df.loc[5, "label"] = None
    df.to_csv(tmp_path / "corpus.csv", index=False)
    return tmp_path / "corpus.csv"


def text_folder(tmp_path):
    """train/ and test/ with class subfolders, a file outside them (unlabelled), an empty file and a class that only
    the test split has: the test-only class must come back too."""
    rng, root = np.random.default_rng(1), tmp_path / "texts"
    for split, classes in (("train", ["b", "a"]), ("test", ["a", "c", "b"])):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                (root / split / c / f"{i}.txt").write_text(sentence(rng), encoding="utf-8")
    (root / "train" / "loose.txt").write_text("  no class here  ", encoding="utf-8")
    (root / "train" / "a" / "empty.txt").write_text("", encoding="utf-8")
    return root


def text_lines(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "lines.txt").write_text("\n".join([sentence(rng) for _ in range(20)] + ["", "last"]), encoding="utf-8")
    return tmp_path / "lines.txt"


TEXT = ("domain=text", "data.text_column=text", "data.target=label")


def read_corpus(path, tmp_path) -> dict:
    read = corpus.Corpus(corpus.source({"path": str(path), "text_column": "text", "target": "label"}), tmp_path)
    return {s: (list(read.texts(s)), read.labels(s)) for s in read.sizes}


@pytest.mark.parametrize("make", [text_table, text_folder, text_lines])
def test_text_shards_read_back_as_the_corpus(tmp_path, make):
    path = make(tmp_path)
    meta = convert(str(path), str(tmp_path / "shards"), list(TEXT))
    assert meta["form"] == "texts"
    assert read_corpus(tmp_path / "shards", tmp_path / "c") == read_corpus(path, tmp_path / "c")
    if make is text_folder:
        assert meta["classes"] == ["a", "b", "c"] and meta["splits"]["train"]["labels"].count(-1) == 1
    if make is text_lines:
        assert meta["splits"]["train"]["labels"] is None  # unlabelled stays unlabelled, not "all -1"


def same_run(tiny, data, shards, *overrides):
    """Three steps from the files and from their shards: the same losses and final held-out metrics (kNN, the
    domain's own), exactly."""
    a = tiny.metrics(tiny.run(*overrides, f"data.path={data}", "trainer.max_steps=3", name="files"))
    b = tiny.metrics(tiny.run(*overrides, f"data.path={shards}", "trainer.max_steps=3", name="shards"))
    losses = [[m["loss"] for m in ms if "loss" in m] for ms in (a, b)]
    assert len(losses[0]) == 3 and losses[0] == losses[1]
    final = [[m for m in ms if "knn_acc" in m][-1] for ms in (a, b)]
    assert final[0] == final[1]


def test_text_run_from_shards_is_the_run_from_the_corpus(tiny, tmp_path):
    path = text_table(tmp_path)
    convert(str(path), str(tmp_path / "shards"), list(TEXT))
    same_run(tiny, path, tmp_path / "shards", *TEXT, "domain.vocab_size=80")


def test_table_shards_read_back_as_the_frame(tmp_path, mixed_table, monkeypatch):
    monkeypatch.setattr("multissl.domains.tabular.table.BLOCK_ROWS", 50)  # three blocks of the 120 rows
    meta = convert(str(mixed_table), str(tmp_path / "shards"), ["domain=tabular"])
    assert meta["form"] == "table" and meta["splits"]["train"]["count"] == 3
    frames, target = located_frames("shards", str(tmp_path / "shards"))
    assert target is None and list(frames) == ["train"]
    original = located_frames("file", mixed_table)[0]["train"]
    pd.testing.assert_frame_equal(frames["train"], original)  # dtypes included: str with NaN, bool, int, float


def test_table_run_from_shards_is_the_run_from_the_file(tiny, tmp_path, mixed_table):
    convert(str(mixed_table), str(tmp_path / "shards"), ["domain=tabular"])
    same_run(tiny, mixed_table, tmp_path / "shards", "domain=tabular", "data.target=churned")


def test_shards_of_another_domain_are_refused_in_one_line(tmp_path, mixed_table):
    convert(str(mixed_table), str(tmp_path / "shards"), ["domain=tabular"])
    with pytest.raises(UserError) as e:
        corpus.source({"path": str(tmp_path / "shards")})
    assert "\n" not in str(e.value) and "domain=tabular" in str(e.value)
