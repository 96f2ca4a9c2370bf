"""Text shards (domains.shards, form "texts"): a corpus written as one UTF-8 text an item with its label's id, in the
order, splits and with the labels the corpus readers give, and read back as a corpus Source streamed in order, so the
corpus and token caches work as they do for files."""
import itertools

from ..shards import Records, Shards
from .corpus import CHUNK, Corpus, Source, batches, fingerprint, source


def records(data: dict, cache_dir) -> dict:
    """data.path's corpus as shard items of the "texts" form: per split, each sample's text in UTF-8 as the corpus
    holds it (empty samples left out, as training leaves them), its label an id into the label names of every split
    (train's first), the labels None for a split the source leaves unlabelled."""
    read = Corpus(source(data), cache_dir)
    classes = list(dict.fromkeys(n for names in read.names.values() for n in names or []))
    index = {c: k for k, c in enumerate(classes)}

    def split(name):
        texts, labels = read.texts(name), read.labels(name)
        ids = None if labels is None else [-1 if v is None else index[v] for v in labels]
        return Records("texts", len(texts), lambda: (texts[i].encode("utf-8") for i in range(len(texts))), ids,
                       classes)
    return {name: split(name) for name in read.sizes}


def shard_source(where: str) -> Source:
    """Shards `records` wrote, streamed in order (remote chunks copied once into the cache); the labels become their
    names again, as the files' readers give them, so the corpus and the classes are the files' own."""
    shards = Shards(where, "text")

    def chunks(split):
        labels = shards.meta["splits"][split]["labels"]  # None: unlabelled, unlike Shards.labels' -1s
        texts = (b.decode("utf-8") for b in shards.stream(split))
        for start, values in zip(itertools.count(0, CHUNK), batches(texts)):
            yield values, None if labels is None else [None if c < 0 else shards.classes[c]
                                                       for c in labels[start:start + len(values)]]

    return Source(fingerprint(["shards", shards.version]), lambda: {split: chunks(split) for split in shards.splits},
                  "empty texts", shards.url)
