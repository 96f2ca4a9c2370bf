"""Text domain: strings -> subword ids (a tokenizer trained once on the training split, `tokenizer`) -> one token
per id with 1-D positions. Views: word-span crops, word deletion, local shuffles, or the text itself (SimCSE: the
encoder's dropout is the augmentation); local views are short spans. Masking: BERT's random 15 % or SpanBERT's
spans, corrupted 80/10/10 ([MASK] / random / unchanged) in place, so masked modeling is masked language modelling."""
import sys

import numpy as np
import torch
from torch import nn

from multissl.errors import UserError

from ..cache import default_cache_dir
from ..files import say_unseen
from ..patches import positions
from ..tabular.table import split_rows
from . import corpus
from .baseline import tfidf_knn
from .losses import masked_token_loss
from .tokenizer import Vocab, cached, read_file
from .views import corrupt, random_positions, span_positions, view

MASKS = ("bert", "span")


class Texts(torch.utils.data.Dataset):
    """Encoded texts: x [2 L] (ids, word index) per sample, class ids y (-1: none), and the strings."""

    def __init__(self, texts: list[str], x: list[torch.Tensor], y: list[int]):
        self.texts, self.x, self.y = texts, x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


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
        self.vocab, self.classes, self._splits, self._raw, self._tfidf = None, None, None, None, {}
        if state:
            self.load_state(state)

    # ---- data -------------------------------------------------------------------------------------------
    def dataset(self, split: str):
        if self._splits is None:
            self._splits = self._load()
        return self._splits.get(split)

    def _load(self) -> dict:
        raw = corpus.load(self.data)
        if "test" not in raw and self.test_fraction > 0 and len(raw["train"][0]) > 1:
            texts, labels = raw["train"]
            strata = None if labels is None else np.array([str(v) for v in labels])
            tr, te = split_rows(len(texts), strata, self.test_fraction)
            pick = lambda idx: ([texts[i] for i in idx], None if labels is None else [labels[i] for i in idx])  # noqa
            raw = {"train": pick(sorted(tr)), "test": pick(sorted(te))}
        if self.vocab is None:
            js = (read_file(self.tokenizer_path) if self.tokenizer_path else
                  cached(self.kind, self.vocab_size, self.lowercase, raw["train"][0], self.cache_dir))
            self.vocab = Vocab(js)
        if self.classes is None:
            self.classes = sorted({v for v in raw["train"][1] or [] if v is not None})
        self._raw = raw
        return self._encode(raw)

    def _encode(self, raw: dict) -> dict:
        """Each split's texts -> Texts; texts with no token (nothing the tokenizer keeps) are left out and counted,
        texts longer than max_length are cut and counted."""
        index = {c: i for i, c in enumerate(self.classes)}
        out, cut, dropped, total = {}, 0, 0, 0
        for split, (texts, labels) in raw.items():
            x, n_cut = self.vocab.encode(texts, self.max_length)
            keep = [i for i, v in enumerate(x) if v.shape[1] > 0]
            if labels and split != "train":
                say_unseen([labels[i] for i in keep], index, f"the {split} split")
            y = [index.get(labels[i], -1) if labels else -1 for i in keep]
            out[split] = Texts([texts[i] for i in keep], [x[i] for i in keep], y)
            cut, dropped, total = cut + n_cut, dropped + len(x) - len(keep), total + len(x)
        if cut:
            print(f"multissl: data: {cut} of {total} texts are longer than domain.max_length={self.max_length} tokens "
                  f"and were cut to it", file=sys.stderr)
        if dropped:
            print(f"multissl: data: {dropped} texts have no token the tokenizer keeps and are left out", file=sys.stderr)
        self._tfidf = {}
        return out

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
            for split, ds in self._encode(self._raw).items():
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

    # ---- evaluation -------------------------------------------------------------------------------------------
    def downstream_metrics(self, embed, limit: int | None = None) -> dict:
        """`tfidf_knn_acc`: the engine's kNN on TF-IDF features of the same held-out split, the bag-of-words
        baseline an encoder should beat (computed once per run)."""
        from multissl.monitor import subset
        tr, te = self._splits["train"], self._splits.get("test")
        if te is None or not self.classes:
            return {}
        if limit not in self._tfidf:
            tr_s, te_s = subset(tr, limit), subset(te, limit)
            idx = lambda s: getattr(s, "indices", range(len(s)))  # noqa: E731
            self._tfidf[limit] = {"tfidf_knn_acc": tfidf_knn([tr.texts[i] for i in idx(tr_s)], [tr.y[i] for i in idx(tr_s)],
                                                             [te.texts[i] for i in idx(te_s)], [te.y[i] for i in idx(te_s)])}
        return self._tfidf[limit]
