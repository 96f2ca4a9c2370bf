"""Subword tokenizers (HF `tokenizers`): WordPiece or byte-level BPE trained once on the training split and cached
by a hash of the texts and the settings, or a user's own tokenizer.json. A tokenizer travels as its JSON string
(checkpoints, the export): training the same one twice need not give the same ids, so a run never retrains it."""
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from multissl.errors import UserError, reason

from ..cache import one_maker, publish

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # loader workers fork after encoding: no Rust threads then

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# the names a user's tokenizer may give the tokens the domain needs (BERT's, RoBERTa's)
ROLES = {"pad": ("[PAD]", "<pad>"), "mask": ("[MASK]", "<mask>"), "cls": ("[CLS]", "<s>"), "sep": ("[SEP]", "</s>")}
KINDS = ("wordpiece", "bpe")


def build(kind: str, vocab_size: int, lowercase: bool, texts: list[str]):
    """A tokenizer of `kind` trained on texts; WordPiece splits on whitespace, punctuation and CJK characters
    (BERT's pre-tokenizer, accents kept: stripping them would break Devanagari and Tamil), byte-level BPE on
    bytes (no unknown tokens)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL)
    else:
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.Sequence([normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else []))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)  # every word starts with its space mark
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    # what BERT-style consumers (transformers) add around a text; the domain itself encodes without them
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    return tok


def cached(kind: str, vocab_size: int, lowercase: bool, texts: Sequence[str], cache_dir: Path) -> str:
    """The JSON of the tokenizer trained on texts (read twice: to hash, then to train) with these settings: read from
    the cache, or trained and published there (`publish`: when several processes train it at once, every one reads
    the first published)."""
    if kind not in KINDS:
        raise UserError(f"domain.tokenizer={kind!r} is not one of {', '.join(KINDS)}; or give your own with "
                        f"domain.tokenizer_path=<tokenizer.json>")
    if vocab_size < len(SPECIAL) + 1:
        raise UserError(f"domain.vocab_size={vocab_size} is too small; use a few thousand (e.g. 4096)")
    h = hashlib.sha256(json.dumps([kind, vocab_size, lowercase]).encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    path = Path(cache_dir) / "text" / f"tokenizer-{h.hexdigest()[:20]}.json"
    if not path.exists():
        with one_maker(path):  # another process training it now: wait and read theirs
            if not path.exists():
                js = build(kind, vocab_size, lowercase, texts).to_str()
                publish(lambda f: f.write(js.encode("utf-8")), path)
    return path.read_text(encoding="utf-8")  # the one published first: two trainings need not give the same ids


def read_file(path: str) -> str:
    """A user's tokenizer.json (domain.tokenizer_path), checked to load."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "tokenizer.json"
    try:
        js = p.read_text(encoding="utf-8")
        from tokenizers import Tokenizer
        Tokenizer.from_str(js)
    except Exception as e:
        raise UserError(f"domain.tokenizer_path={path}: cannot load a tokenizer.json ({reason(e)}); save one with "
                        f"tokenizer.save(path) or a transformers tokenizer's save_pretrained") from None
    return js


class Vocab:
    """A tokenizer from its JSON, with the ids the domain needs: padding, [MASK], and which ids are special
    (never masked, scored or drawn as random replacements)."""

    def __init__(self, js: str):
        from tokenizers import Tokenizer
        self.json, self.tok = js, Tokenizer.from_str(js)
        self.tok.no_padding()  # a saved tokenizer may pad or cut: the domain does both itself
        self.tok.no_truncation()
        self.size = self.tok.get_vocab_size()
        ids = {role: next((self.tok.token_to_id(n) for n in names if self.tok.token_to_id(n) is not None), None)
               for role, names in ROLES.items()}
        for role in ("pad", "mask"):
            if ids[role] is None:
                raise UserError(f"the tokenizer has no {role} token ({' or '.join(ROLES[role])}); add it as a special "
                                f"token or let multissl train one (unset domain.tokenizer_path)")
        self.pad_id, self.mask_id, self.cls_id, self.sep_id = ids["pad"], ids["mask"], ids["cls"], ids["sep"]
        added = [i for i, t in self.tok.get_added_tokens_decoder().items() if t.special]
        self.special = torch.zeros(self.size, dtype=torch.bool)
        self.special[[i for i in {*added, *ids.values()} if i is not None]] = True

    def pieces(self, texts: list[str], max_length: int):
        """Per text (one encode_batch call for all): its ids and each token's word index (-1: none), cut to
        max_length tokens, and whether it was cut. No special tokens are added (the encoder has its own CLS)."""
        for e in self.tok.encode_batch(list(texts), add_special_tokens=False):
            yield e.ids[:max_length], [-1 if w is None else w for w in e.word_ids[:max_length]], len(e.ids) > max_length

    def encode(self, texts: list[str], max_length: int) -> tuple[list[torch.Tensor], int]:
        """texts -> ([2 L] per text: ids, then each token's word index), cut to max_length tokens (`pieces`), and how
        many texts were cut."""
        out, cut = [], 0
        for ids, words, was_cut in self.pieces(texts, max_length):
            cut += was_cut
            out.append(torch.tensor([ids, words], dtype=torch.long))
        return out, cut
