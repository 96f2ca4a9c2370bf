"""Text domain: strings -> subword ids (a tokenizer trained once on the training split, `tokenizer`) -> one token
per id with 1-D positions. Views: word-span crops, word deletion, local shuffles, or the text itself (SimCSE: the
encoder's dropout is the augmentation); local views are short spans. Masking: BERT's random 15 % or SpanBERT's
spans, corrupted 80/10/10 ([MASK] / random / unchanged) in place, so masked modeling is masked language modelling."""
import sys

import numpy as np
import torch
from torch import nn

from multissl.errors import UserError

from .. import raw
from ..cache import default_cache_dir
from ..files import say_unseen
from ..patches import positions
from ..tabular.table import split_rows
from . import corpus, shards
from .losses import masked_token_loss
from .tokenizer import Vocab, cached, read_file
from .tokens import Texts, tokenized
from .views import corrupt, random_positions, span_positions, view

MASKS = ("bert", "span")
TOKENIZER_TEXTS = 1_000_000  # the most training texts (evenly spread) a tokenizer is trained on
# Up to this median length the default encoder is the bag of n-grams: its n-grams cover most of the word order of a
# title, a tweet or a chat line, and it learns such texts in the steps a transformer spends finding its footing.
SHORT_TEXT_WORDS = 32


class TokenEmbed(nn.Module):
    """ids [b n] -> [b n d]: a token embedding plus 1-D positions, a learned table (its first n columns for n tokens)
    or fixed sine-cosine ones."""

    def __init__(self, vocab: int, max_length: int, dim: int, pos: str):
        super().__init__()
        if pos not in ("learned", "sincos"):
            raise UserError(f"domain.pos_embed must be learned or sincos, got {pos!r}")
        self.tokens = nn.Embedding(vocab, dim)
        nn.init.trunc_normal_(self.tokens.weight, std=0.02)
        self.pos = nn.Parameter(torch.randn(1, dim, max_length) * 0.02) if pos == "learned" else None

    def forward(self, ids):
        t = self.tokens(ids)  # [b n d]
        return t + positions(self.pos, t.transpose(1, 2), "crop").transpose(1, 2)


class TextDomain:
    name = "text"
    drops_masked = False  # masked tokens stay in the input, corrupted (BERT)
    scores_masked_only = True  # logits over the vocabulary at the masked 15 % alone
    local_views = True

    def __init__(self, tokenizer: str = "wordpiece", vocab_size: int = 8192, tokenizer_path: str | None = None,
                 lowercase: bool = True, max_length: int = 64, test_fraction: float = 0.2, crop=(0.5, 1.0),
                 local_crop=(0.2, 0.4), word_deletion: float = 0.1, shuffle: int = 0, mask: str = "bert",
                 mask_ratio: float = 0.15, mask_replace=(0.8, 0.1, 0.1), span_p: float = 0.2, span_max: int = 10,
                 pos_embed: str = "learned", cache_dir: str | None = None, data=None, state: dict | None = None):
        if mask not in MASKS:
            raise UserError(f"domain.mask must be one of {', '.join(MASKS)}, got {mask!r}")
        for key, (lo, hi) in (("crop", crop), ("local_crop", local_crop)):
            if not 0 < lo <= hi <= 1:
                raise UserError(f"domain.{key}=[{lo}, {hi}] must be shares of the words, 0 < low <= high <= 1")
        if len(mask_replace) != 3 or abs(sum(mask_replace) - 1) > 1e-6 or min(mask_replace) < 0:
            raise UserError(f"domain.mask_replace={list(mask_replace)} must be three shares ([MASK], random, unchanged) "
                            f"summing to 1, e.g. [0.8, 0.1, 0.1]")
        if max_length < 1:
            raise UserError(f"domain.max_length={max_length} must be at least 1 token")
        self.kind, self.vocab_size, self.tokenizer_path, self.lowercase = tokenizer, vocab_size, tokenizer_path, lowercase
        self.max_length, self.test_fraction, self.pos_embed = max_length, test_fraction, pos_embed
        self.crop, self.local_crop, self.word_deletion, self.shuffle = tuple(crop), tuple(local_crop), word_deletion, shuffle
        self.mask_mode, self.mask_ratio, self.mask_replace = mask, mask_ratio, tuple(mask_replace)
        self.span_p, self.span_max = span_p, span_max
        self.cache_dir = cache_dir or default_cache_dir()
        self.data = data or {}
        self.vocab, self.classes, self._splits, self._idf = None, None, None, None
        self._corpus = None  # corpus.Corpus: the texts and labels read
        if state:
            self.load_state(state)

    # ---- data -------------------------------------------------------------------------------------------
    def dataset(self, split: str):
        if self._splits is None:
            self._splits = self._load()
        return self._splits.get(split)

    def _load(self) -> dict:
        """The corpus (read once and cached), its split, the tokenizer (trained on the training split unless given)
        and the token files (tokenized once and cached)."""
        self._corpus = corpus.Corpus(corpus.source(self.data), self.cache_dir)
        plan = self._split(self._corpus)
        if self.vocab is None:
            split, rows = plan["train"]
            if len(rows) > TOKENIZER_TEXTS:  # a vocabulary settles long before a corpus of millions is read through
                rows = rows[np.linspace(0, len(rows) - 1, TOKENIZER_TEXTS).astype(int)]
            train = self._corpus.texts(split, rows)
            js = (read_file(self.tokenizer_path) if self.tokenizer_path else
                  cached(self.kind, self.vocab_size, self.lowercase, train, self.cache_dir))
            self.vocab = Vocab(js)
        if self.classes is None:
            self.classes = sorted({v for v in self._corpus.labels(*plan["train"]) or [] if v is not None})
        return self._encode(plan)

    def _split(self, read: corpus.Corpus) -> dict:
        """{split: (the corpus split it comes from, rows of it)}: the corpus's own splits, else a fixed share of its
        training split held out (stratified by label where it can be)."""
        n = read.sizes["train"]
        if "test" in read.sizes or self.test_fraction <= 0 or n <= 1:
            return {split: (split, np.arange(size)) for split, size in read.sizes.items()}
        labels = read.labels("train")
        strata = None if labels is None else np.array([str(v) for v in labels])
        tr, te = split_rows(n, strata, self.test_fraction)
        return {"train": ("train", np.sort(tr)), "test": ("train", np.sort(te))}

    def _encode(self, plan: dict) -> dict:
        """Each split's token files -> Texts; texts with no token (nothing the tokenizer keeps) are left out and
        counted, texts longer than max_length are cut and counted."""
        tokens, info = tokenized(self.vocab, self._corpus, plan, self.max_length, self.cache_dir)
        index = {c: i for i, c in enumerate(self.classes)}
        out = {}
        for split, (source, _) in plan.items():
            labels = self._corpus.labels(source, tokens[f"{split}.rows"])
            if labels and split != "train":
                say_unseen(labels, index, f"the {split} split")
            y = [index.get(v, -1) for v in labels] if labels else [-1] * len(tokens[f"{split}.rows"])
            out[split] = Texts(tokens, split, self._corpus, source, y)
        if info["cut"]:
            print(f"multissl: data: {info['cut']} of {info['total']} texts are longer than "
                  f"domain.max_length={self.max_length} tokens and were cut to it", file=sys.stderr)
        if info["dropped"]:
            print(f"multissl: data: {info['dropped']} texts have no token the tokenizer keeps and are left out",
                  file=sys.stderr)
        self._idf = None  # document frequencies of this data's training split
        return out

    @staticmethod
    def default_encoder(data: dict, cache_dir: str | None = None, **keys) -> tuple[str, str] | None:
        """Short texts read best through the bag of n-grams (docs/domains/text.md), longer ones through the configured
        default (the transformer). Asked when the config is composed, from the first texts of the training split:
        the corpus is read into the cache here (as training would read it first), so training reads it once."""
        words = corpus.median_words(corpus.Corpus(corpus.source(data), cache_dir or default_cache_dir()))
        if words > SHORT_TEXT_WORDS:
            return None
        return "bag", (f"the texts are short (a median of {words:g} words, at most {SHORT_TEXT_WORDS}), which a bag of "
                       f"n-grams learns faster than the transformer")

    @staticmethod
    def records(data: dict) -> dict:
        """data.path's corpus as shard items: each sample's text, in the order, splits and with the labels the corpus
        readers give (text/shards.py; the corpus is read into the cache as training reads it)."""
        return shards.records(data, default_cache_dir())

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes else None

    def state(self) -> dict:
        """The tokenizer (its JSON), the classes and the length: what export and checkpoints save."""
        return {"tokenizer": self.vocab.json, "classes": self.classes, "max_length": self.max_length}

    def load_state(self, s: dict):
        """A saved tokenizer replaces the one built here; loaded data is re-encoded with it."""
        changed = self.vocab is None or self.vocab.json != s["tokenizer"]
        self.vocab, self.classes, self.max_length = Vocab(s["tokenizer"]), s["classes"], s["max_length"]
        if changed and self._splits is not None:
            for split, ds in self._encode(self._split(self._corpus)).items():
                vars(self._splits[split]).update(vars(ds))  # in place: the engine holds these datasets

    # ---- views ------------------------------------------------------------------------------------------
    def views(self, x: torch.Tensor, rng: torch.Generator, n_global: int = 2, n_local: int = 0) -> list[torch.Tensor]:
        """x [2 L] -> n_global views then n_local short ones, ids [L'] each."""
        return ([view(x, self.crop, self.word_deletion, self.shuffle, rng) for _ in range(n_global)]
                + [view(x, self.local_crop, self.word_deletion, self.shuffle, rng) for _ in range(n_local)])

    def collate(self, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [L_i] each -> x [b n] (padding id after the end), pad [b n] True there."""
        n = max(len(v) for v in inputs)
        x = torch.full((len(inputs), n), self.vocab.pad_id, dtype=torch.long)
        pad = torch.ones(len(inputs), n, dtype=torch.bool)
        for i, v in enumerate(inputs):
            x[i, :len(v)], pad[i, :len(v)] = v, False
        return x, pad

    def eval_input(self, x: torch.Tensor) -> torch.Tensor:
        return x[0]

    def raw_features(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """The bag-of-words baseline: TF-IDF rows [b V] of the token ids, the document frequencies counted on the
        training split once."""
        return raw.tf_idf(x, pad, self.idf, self.vocab.special)

    @property
    def idf(self) -> torch.Tensor | None:
        """[V] the smoothed inverse document frequency of each token id in the training split, counted once (None
        before any data is read: a domain built from an export's state)."""
        if self._idf is None and self._splits is not None:
            train = self._splits["train"]
            self._idf = raw.idf_of((train.sample(i)[0] for i in range(len(train))), self.vocab.size)
        return self._idf

    def preprocess(self, raw) -> tuple[torch.Tensor, torch.Tensor]:
        """A list of strings -> (ids [b n], pad [b n]), cut to max_length; an empty string is one [PAD]-free unknown
        token, so every text has a representation."""
        if isinstance(raw, str) or not all(isinstance(s, str) for s in raw):
            raise UserError("a text batch is a list of strings, e.g. encoder.embed(['first text', 'second'])")
        x, _ = self.vocab.encode(list(raw), self.max_length)
        unk = self.vocab.tok.token_to_id("[UNK]") or self.vocab.tok.token_to_id("<unk>") or 0
        return self.collate([v[0] if v.shape[1] else torch.tensor([unk]) for v in x])

    # ---- tokens and masking -----------------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return self.max_length

    @property
    def target_dim(self) -> int:
        return self.vocab.size  # a logit per token id

    def embedder(self, dim: int) -> nn.Module:
        return TokenEmbed(self.vocab.size, self.max_length, dim, self.pos_embed)

    def steps(self, tokens: torch.Tensor, pad: torch.Tensor | None):
        """Each token is a step of the text's order: tokens [b n d] and pad [b n] as they are."""
        return tokens, pad

    def mask(self, batch_size: int, rng: torch.Generator, n_tokens: int | None = None):
        """keep = every token (they stay visible, corrupted: `corrupt`), masked = BERT's random positions or
        SpanBERT's spans of the sample's own n_tokens."""
        n = n_tokens or self.max_length
        pick = ((lambda: random_positions(n, self.mask_ratio, rng)) if self.mask_mode == "bert" else
                (lambda: span_positions(n, self.mask_ratio, rng, self.span_p, self.span_max)))
        return torch.arange(n).repeat(batch_size, 1), torch.stack([pick() for _ in range(batch_size)])

    def corrupt(self, view: torch.Tensor, masked: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return corrupt(view, masked, self.vocab.mask_id, self.vocab.special, self.mask_replace, rng)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return x  # the clean ids [b n]

    def reconstruction_loss(self, pred, target, masked):
        return masked_token_loss(pred, target, masked, self.vocab.special)
