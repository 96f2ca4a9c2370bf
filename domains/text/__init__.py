"""The text domain (`domain=text`): a corpus -> subword ids -> one token per id.

    corpus.py     where text comes from (the embedded chatterbot corpus, .txt, folders, tables, HF datasets), read
                  once into a cached, memory-mapped text store
    tokens.py     the corpus tokenized once into cached, memory-mapped ids + offsets per split (nanoGPT's .bin)
    tokenizer.py  WordPiece / byte-level BPE trained once and cached, or a user's tokenizer.json
    views.py      word-span crops, word deletion, local shuffles; BERT and SpanBERT masks, BERT's corruption
    losses.py     masked language modelling's cross-entropy
    bert.py       encoder=bert: a transformers BERT backbone, from a config or a local checkpoint, saved back
    bag.py        encoder=bag: a bag of hashed n-grams (fastText), fast on a CPU
    hf.py         encoder=hf: any transformers text encoder from a local folder (RoBERTa, DistilBERT, ...)
"""
from .bag import BagEncoder
from .bert import BertEncoder
from .domain import TextDomain
from .hf import HFTextEncoder

__all__ = ["BagEncoder", "BertEncoder", "HFTextEncoder", "TextDomain"]
