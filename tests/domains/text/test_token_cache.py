"""Corpora read once and tokenized once into cached, memory-mapped flat files: the samples, views and evaluation inputs
are those of reading the corpus whole and encoding each text in memory; the cache is reused and keyed by the source
and the tokenizer; loader workers get the files' places, not their arrays; another process reads the same ids."""
import json
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from multissl.domains.tabular.table import split_rows
from multissl.domains.text import TextDomain, corpus, tokens
from multissl.domains.text.tokenizer import Vocab
from multissl.errors import UserError

ROWS = [f"{w} number {i} is {'odd' if i % 2 else 'even'}, and {w}s like it" for i, w in
        enumerate(["cat", "dog", "bird", "fish", "frog", "mouse", "horse", "sheep"] * 4)]
ROWS[5], ROWS[11] = "\x07", "  "  # no token the tokenizer keeps (left out), and an empty sample (skipped)


@pytest.fixture
def small(monkeypatch):
    """Chunks of 3 samples, so a tiny corpus crosses chunk and batch boundaries."""
    monkeypatch.setattr(corpus, "CHUNK", 3)
    monkeypatch.setattr(tokens, "BATCH", 3)


@pytest.fixture
def lines_file(tmp_path):
    f = tmp_path / "lines.txt"
    f.write_text("\n".join(ROWS) + "\n", encoding="utf-8")
    return f


def text_domain(tmp_path, path, **kw):
    data = {"path": path if isinstance(path, list) else str(path), **kw.pop("data", {})}
    return TextDomain(**{"vocab_size": 120, "max_length": 8, **kw}, cache_dir=str(tmp_path / "cache"), data=data)


def cached(tmp_path, kind: str) -> list:
    return sorted((tmp_path / "cache" / "text").glob(f"{kind}-*"))


def reference(d: TextDomain, texts: list, labels: list | None) -> dict:
    """The texts, x and y of each split as the domain made them before the token files: the whole corpus in memory,
    split, and encoded text by text."""
    strata = None if labels is None else np.array([str(v) for v in labels])
    tr, te = split_rows(len(texts), strata, d.test_fraction)
    index, out = {c: i for i, c in enumerate(d.classes)}, {}
    for split, idx in (("train", sorted(tr)), ("test", sorted(te))):
        x, _ = d.vocab.encode([texts[i] for i in idx], d.max_length)
        keep = [k for k, v in enumerate(x) if v.shape[1] > 0]
        out[split] = ([texts[idx[k]] for k in keep], [x[k] for k in keep],
                      [index.get(labels[idx[k]], -1) if labels else -1 for k in keep])
    return out


def assert_same_as_in_memory(d: TextDomain, texts: list, labels: list | None = None):
    """Bitwise the same samples, evaluation inputs and views as `reference`."""
    d.dataset("train")  # the tokenizer and classes
    for split, (want_texts, want_x, want_y) in reference(d, texts, labels).items():
        ds = d.dataset(split)
        assert ds.texts == want_texts and ds.y == want_y and len(ds) == len(want_x)
        for i, want in enumerate(want_x):
            got = ds[i]["x"]
            assert got.dtype == want.dtype == torch.long and torch.equal(got, want)
            assert torch.equal(d.eval_input(got), d.eval_input(want))
        for i in range(min(len(ds), 50)):
            a, b = (d.views(x, torch.Generator().manual_seed(i), 2, 1) for x in (ds[i]["x"], want_x[i]))
            assert all(torch.equal(u, v) for u, v in zip(a, b))


def non_empty(values, labels=None) -> tuple[list, list | None]:
    keep = [i for i, v in enumerate(values) if isinstance(v, str) and v.strip()]
    return [values[i].strip() for i in keep], None if labels is None else [labels[i] for i in keep]


@pytest.fixture(scope="module")
def default_domain():
    return TextDomain()  # the embedded corpus, in the user's cache as every run reads it


def test_the_default_corpus_gives_the_samples_of_reading_it_whole(default_domain):
    texts, labels = corpus.chatterbot()["train"]
    assert_same_as_in_memory(default_domain, texts, labels)
    ids = default_domain.dataset("train").tokens["train.ids"]
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16  # a vocabulary of 8192: two bytes an id


@pytest.mark.parametrize("form", [".txt", ".csv", ".parquet", "hf"])
def test_files_give_the_samples_of_reading_them_whole_across_chunks(tmp_path, small, form, capsys):
    labels = [["calm", "wild", None][i % 3] for i in range(len(ROWS))]
    df = pd.DataFrame({"text": ROWS, "topic": labels})
    path = tmp_path / f"corpus{form}"
    if form == ".txt":
        path.write_text("\n".join(ROWS), encoding="utf-8")
        labels = None
    elif form == ".csv":
        df.to_csv(path, index=False)
    elif form == ".parquet":
        df.to_parquet(path, row_group_size=4)  # row groups that do not line up with the chunks
    else:
        datasets = pytest.importorskip("datasets")
        datasets.Dataset.from_pandas(df).save_to_disk(path)
    d = text_domain(tmp_path, path, data={} if labels is None else {"target": "topic"})
    assert_same_as_in_memory(d, *non_empty(ROWS, labels))
    err = capsys.readouterr().err
    assert "skipped 1 " in err and "1 texts have no token" in err and "texts are longer than" in err


def test_texts_in_memory_are_tokenized_in_memory(tmp_path, small):
    d = text_domain(tmp_path, ROWS)
    assert_same_as_in_memory(d, *non_empty(ROWS))
    assert not cached(tmp_path, "corpus") and not cached(tmp_path, "tokens")
    assert not isinstance(d.dataset("train").tokens["train.ids"], np.memmap)


def test_a_second_build_reads_the_cache_and_neither_the_corpus_nor_the_tokenizer(tmp_path, lines_file, monkeypatch):
    a = text_domain(tmp_path, lines_file)
    want = [x.clone() for x in a.dataset("train").x]
    assert len(cached(tmp_path, "corpus")) == len(cached(tmp_path, "tokens")) == 1
    monkeypatch.setattr(Vocab, "pieces", lambda *a, **k: pytest.fail("tokenized again"))
    monkeypatch.setattr(corpus, "lines", lambda *a, **k: pytest.fail("read again"))
    b = text_domain(tmp_path, lines_file)
    assert all(torch.equal(x, w) for x, w in zip(b.dataset("train").x, want))
    assert b.dataset("train").texts == a.dataset("train").texts and len(b.dataset("train")) == len(want)


def test_a_changed_source_tokenizer_or_length_makes_new_files(tmp_path, lines_file):
    a = text_domain(tmp_path, lines_file)
    a.dataset("train")
    lines_file.write_text("\n".join(ROWS + ["a zebra joins the herd"]), encoding="utf-8")
    b = text_domain(tmp_path, lines_file)
    assert "a zebra joins the herd" in b.dataset("train").texts + b.dataset("test").texts
    assert len(cached(tmp_path, "corpus")) == len(cached(tmp_path, "tokens")) == 2
    text_domain(tmp_path, lines_file, max_length=4).dataset("train")
    assert len(cached(tmp_path, "corpus")) == 2 and len(cached(tmp_path, "tokens")) == 3
    other = text_domain(tmp_path, lines_file, tokenizer="bpe")  # another tokenizer: the same corpus, new ids
    other.dataset("train")
    assert len(cached(tmp_path, "corpus")) == 2 and len(cached(tmp_path, "tokens")) == 4
    held = b.dataset("train")
    b.load_state({**b.state(), "tokenizer": other.vocab.json})  # re-encoded in place, from the cached files
    assert len(cached(tmp_path, "tokens")) == 4
    assert all(torch.equal(x, y) for x, y in zip(held.x, other.dataset("train").x))


def test_a_pickled_dataset_holds_no_ids(default_domain):
    """Loader workers under spawn get the dataset pickled: where its files are, its labels, never its arrays."""
    ds = default_domain.dataset("train")
    assert ds[0]["x"].numel() and ds.tokens.mapped  # mapped in this process
    blob = pickle.dumps(ds)
    assert len(blob) < 4 * len(ds) + 4096 < ds.tokens["train.ids"].nbytes  # the labels, a few bytes a sample
    copy = pickle.loads(blob)
    assert not copy.tokens.mapped and not copy.corpus.arrays.mapped
    assert torch.equal(copy[len(ds) - 1]["x"], ds[len(ds) - 1]["x"]) and copy.texts[3] == ds.texts[3]


CHILD = """
import json, sys
import torch
from multissl.domains.text import TextDomain, tokenizer
tokenizer.Vocab.pieces = tokenizer.build = lambda *a, **k: sys.exit("tokenized again")
state, path, cache = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
d = TextDomain(vocab_size=120, max_length=8, cache_dir=cache, data={"path": path}, state=state)
torch.save([d.dataset(s)[i]["x"] for s in ("train", "test") for i in range(len(d.dataset(s)))], sys.argv[4])
"""


def test_a_domain_rebuilt_from_its_state_in_another_process_reads_the_same_ids(tmp_path, lines_file):
    a = text_domain(tmp_path, lines_file)
    want = [a.dataset(s)[i]["x"] for s in ("train", "test") for i in range(len(a.dataset(s)))]
    (tmp_path / "state.json").write_text(json.dumps(a.state()), encoding="utf-8")
    out = tmp_path / "ids.pt"
    subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "state.json"), str(lines_file),
                    str(tmp_path / "cache"), str(out)], check=True)
    got = torch.load(out)
    assert len(got) == len(want) and all(torch.equal(g, w) for g, w in zip(got, want))


def test_a_split_left_without_text_reads_as_empty(tmp_path):
    for i, (split, text) in enumerate((("train", "a cat"), ("train", "a dog"), ("test", "   "))):
        (tmp_path / "docs" / split).mkdir(parents=True, exist_ok=True)
        (tmp_path / "docs" / split / f"{i}.txt").write_text(text, encoding="utf-8")
    d = text_domain(tmp_path, tmp_path / "docs")
    assert len(d.dataset("train")) == 2 and len(d.dataset("test")) == 0 and d.dataset("test").texts == []
    assert len(text_domain(tmp_path, tmp_path / "docs").dataset("test")) == 0  # read back from the cache


def test_a_txt_file_streams_its_lines(tmp_path):
    """Every line break str.splitlines knows, and the offset of a bad byte far into the file."""
    f = tmp_path / "mixed.txt"
    f.write_bytes("one\r\ntwo\rthree\u2028four\n\nfive\n".encode() + b"six \xe9\n")
    bad = f.read_bytes().index(0xE9)
    it = corpus.lines(f)
    assert [next(it) for _ in range(6)] == ["one", "two", "three", "four", "", "five"]
    with pytest.raises(UserError, match=f"byte 0xe9 at offset {bad}\\)"):
        next(it)


def test_ids_take_two_bytes_up_to_65536_entries():
    assert tokens.ids_dtype(1 << 16) == np.uint16 and tokens.ids_dtype((1 << 16) + 1) == np.uint32
