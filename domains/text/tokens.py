"""Samples at rest: samples of any length stored end to end in flat arrays with offsets int64 [n+1] (sample i is
values[off[i]:off[i + 1]], as nanoGPT's .bin files), written chunk by chunk into a cache folder that is published whole
under its key (first writer wins, as `cache.publish` for a file), then memory-mapped when read — in every loader
worker too: a pickled copy holds the folder, never the arrays. Data given in memory is kept in memory the same way,
never cached.

The token files: each split's texts tokenized once, in batches, into `<split>.ids` (uint16, uint32 for a vocabulary
over 65,536 entries), `<split>.words` (each token's word index, int32; -1: none), `<split>.offsets` int64 [n+1] and
`<split>.rows` (the corpus row of each sample, int64 [n]), cached by the corpus, the split's rows, the tokenizer (a
hash of its JSON) and max_length. `Texts` reads sample i as ids[off[i]:off[i + 1]]."""
import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .tokenizer import Vocab

if TYPE_CHECKING:
    from .corpus import Corpus

BATCH = 4096  # texts per encode_batch call
FORMAT = 1  # what token files hold; a change makes new cache entries


class Arrays:
    """Named flat arrays: a published folder's (raw .bin files, `spec` {name: (dtype, length)}), memory-mapped on
    first use in each process, or arrays in memory (folder None)."""

    def __init__(self, folder: Path | None, spec: dict, arrays: dict | None = None):
        self.folder, self.spec, self.mapped = folder, spec, dict(arrays or {})

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.mapped:
            dtype, n = self.spec[name]
            self.mapped[name] = (np.memmap(self.folder / f"{name}.bin", dtype=dtype, mode="r", shape=(n,)) if n else
                                 np.zeros(0, dtype))  # an empty file cannot be mapped
        return self.mapped[name]

    def __getstate__(self):
        return {**vars(self), "mapped": {} if self.folder else self.mapped}


class Columns:
    """Flat arrays filled chunk by chunk: raw files in `folder`, or in memory (folder None)."""

    def __init__(self, folder: Path | None):
        self.folder, self.spec, self.parts, self.files, self.ends = folder, {}, {}, {}, {}

    def add(self, name: str, values, dtype):
        a = np.asarray(values, dtype=dtype)
        self.spec[name] = (a.dtype.str, self.spec.get(name, (None, 0))[1] + len(a))
        if self.folder is None:
            self.parts.setdefault(name, []).append(a)
            return
        if name not in self.files:
            self.files[name] = open(self.folder / f"{name}.bin", "wb")
        self.files[name].write(a.tobytes())

    def add_offsets(self, name: str, lengths):
        """Offsets int64 [n+1] of samples appended chunk by chunk: the first call writes the leading 0 too."""
        if name not in self.ends:
            self.add(name, [0], np.int64)
        ends = self.ends.get(name, 0) + np.cumsum(lengths, dtype=np.int64)
        self.add(name, ends, np.int64)
        self.ends[name] = int(ends[-1]) if len(ends) else self.ends.get(name, 0)

    def close(self) -> Arrays:
        for f in self.files.values():
            f.close()
        return Arrays(self.folder, self.spec, None if self.folder else
                      {k: np.concatenate(v) for k, v in self.parts.items()})


def stored(path: Path | None, fill: Callable[[Columns], dict]) -> tuple[Arrays, dict]:
    """The arrays and info (JSON) published at `path`. When there are none yet, fill(columns) -> info makes them in a
    temporary folder, published whole (when another process published first, theirs is kept: it holds the same).
    path None: made in memory."""
    if path is None:
        columns = Columns(None)
        info = fill(columns)
        return columns.close(), info
    if not path.is_dir():
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        tmp.mkdir(parents=True)
        try:
            columns = Columns(tmp)
            try:
                info = fill(columns)
            finally:
                columns.close()
            (tmp / "meta.json").write_text(json.dumps({"arrays": columns.spec, "info": info}), encoding="utf-8")
            try:
                tmp.rename(path)  # atomic; refused when the name exists
            except OSError:
                if not path.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    return Arrays(path, {k: tuple(v) for k, v in meta["arrays"].items()}), meta["info"]


class Lazy(Sequence):
    """A read-only list whose item i is get(i), made when it is read (a slice: a list); it compares and concatenates
    as a list does."""

    def __init__(self, get: Callable[[int], object], n: int):
        self.get, self.n = get, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.get(j) for j in range(*i.indices(self.n))]
        i = int(i) + (self.n if i < 0 else 0)
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of {self.n}")
        return self.get(i)

    def __eq__(self, other):
        return (isinstance(other, Sequence) and not isinstance(other, str) and len(other) == self.n
                and all(a == b for a, b in zip(self, other)))

    def __add__(self, other):
        return list(self) + list(other)

    def __radd__(self, other):
        return list(other) + list(self)


class Texts(torch.utils.data.Dataset):
    """Encoded texts: x [2 L] (ids, word index) per sample, class ids y (-1: none), and the strings (`texts`, read
    from the corpus when asked for). Pickled (for loader workers), it holds where the arrays are, not the arrays."""

    def __init__(self, tokens: Arrays, split: str, corpus: "Corpus", source: str, y: list[int]):
        self.tokens, self.split, self.corpus, self.source, self.y = tokens, split, corpus, source, y

    def __len__(self):
        return len(self.y)

    def sample(self, i: int) -> torch.Tensor:
        """x [2 L]: the ids and word indices of sample i (int64, as the tokenizer gave them)."""
        i = range(len(self))[i]  # a negative index counts from the end, one past it is an IndexError
        a, b = self.tokens[f"{self.split}.offsets"][i:i + 2]
        pair = [self.tokens[f"{self.split}.ids"][a:b], self.tokens[f"{self.split}.words"][a:b]]
        return torch.from_numpy(np.array(pair, dtype=np.int64))

    def __getitem__(self, i):
        return {"x": self.sample(i), "y": self.y[i]}

    @property
    def x(self) -> Lazy:
        return Lazy(self.sample, len(self))

    @property
    def texts(self) -> Lazy:
        return self.corpus.texts(self.source, self.tokens[f"{self.split}.rows"])


def ids_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def key(corpus: "Corpus", plan: dict, vocab: Vocab, max_length: int) -> str:
    """What the token files depend on: the corpus, each split's rows of it, the tokenizer and max_length."""
    tokenizer = hashlib.sha256(vocab.json.encode()).hexdigest()
    h = hashlib.sha256(json.dumps([FORMAT, corpus.key, tokenizer, max_length]).encode())
    for split, (source, rows) in plan.items():
        h.update(f"{split}\0{source}\0".encode())
        h.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def tokenized(vocab: Vocab, corpus: "Corpus", plan: dict, max_length: int, cache_dir) -> tuple[Arrays, dict]:
    """The token arrays of plan {split: (corpus split, rows of it)} and the counts of texts cut and left out: from
    the cache, or tokenized now and cached (in memory for a corpus in memory)."""
    path = None if corpus.key is None else (Path(cache_dir) / "text" /
                                            f"tokens-{key(corpus, plan, vocab, max_length)}")
    return stored(path, lambda columns: encode(vocab, corpus, plan, max_length, columns))


def encode(vocab: Vocab, corpus: "Corpus", plan: dict, max_length: int, columns: Columns) -> dict:
    """Tokenizes each split BATCH texts at a time; a text with no token (nothing the tokenizer keeps) is left out."""
    cut = dropped = 0
    dtype = ids_dtype(vocab.size)
    for split, (source, rows) in plan.items():
        texts = corpus.texts(source, rows)
        for name, kind in (("ids", dtype), ("words", np.int32), ("rows", np.int64)):
            columns.add(f"{split}.{name}", [], kind)  # a split may have no text left
        columns.add_offsets(f"{split}.offsets", [])
        for start in range(0, len(texts), BATCH):
            batch, ids, words, lengths, kept = texts[start:start + BATCH], [], [], [], []
            for j, (i, w, was_cut) in enumerate(vocab.pieces(batch, max_length)):
                cut += was_cut
                if i:
                    ids += i
                    words += w
                    lengths.append(len(i))
                    kept.append(rows[start + j])
            dropped += len(batch) - len(kept)
            columns.add(f"{split}.ids", ids, dtype)
            columns.add(f"{split}.words", words, np.int32)
            columns.add_offsets(f"{split}.offsets", lengths)
            columns.add(f"{split}.rows", kept, np.int64)
    return {"cut": cut, "dropped": dropped, "total": sum(len(rows) for _, rows in plan.values())}
