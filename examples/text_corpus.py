"""Pretrain a sentence encoder on a plain .txt corpus (one text per line), then search it with new questions.

    python examples/text_corpus.py                               # masked language modelling, 300 steps
    python examples/text_corpus.py objective=simclr "domain.crop=[1,1]" domain.word_deletion=0 encoder.dropout=0.1

The corpus here is the English part of the chatterbot-corpus package written to a file; any UTF-8 .txt works.
"""
import sys

import torch.nn.functional as F

import multissl
from multissl.cli import load_config
from multissl.domains.text.corpus import chatterbot
from multissl.train import run

texts, labels = chatterbot()["train"]
lines = [t for t, lb in zip(texts, labels) if lb.startswith("english/") and "\n" not in t]
with open("corpus.txt", "w", encoding="utf-8") as f:
    f.write("\n".join(lines))

overrides = sys.argv[1:] or ["objective=mae", "trainer.max_steps=300"]
folder = run(load_config(["domain=text", "data.path=corpus.txt", "run.dir=runs/text-example", *overrides]))

encoder = multissl.load_encoder(folder)  # weights + the tokenizer it was trained with
corpus = F.normalize(encoder.embed(lines), dim=1)  # a list of strings in, [n d] out
for question in ["what do you like to eat?", "who wrote hamlet?", "my computer will not start"]:
    best = (F.normalize(encoder.embed([question]), dim=1) @ corpus.T)[0].topk(2).indices
    print(f"{question!r} -> " + " | ".join(repr(lines[i][:60]) for i in best.tolist()))
