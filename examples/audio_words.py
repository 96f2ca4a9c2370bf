"""The audio headline: pretrain a spectrogram transformer with BYOL on spoken words, then classify words from its
embeddings with a few labels.

    python examples/audio_words.py                           # BYOL, 300 steps
    python examples/audio_words.py objective=simclr trainer.max_steps=500

The words are the embedded default (espeak-ng voices saying twenty words, synthesized offline once and cached); with
your own recordings set data.path=<a folder of .wav/.flac files>. Held-out speakers are scored, so the words must be
recognized in voices the encoder never heard.
"""
import sys

import torch
from sklearn.linear_model import LogisticRegression

import multissl
from multissl.cli import load_config
from multissl.train import run

overrides = sys.argv[1:] or ["objective=byol", "trainer.max_steps=300"]
folder = run(load_config(["domain=audio", "run.dir=runs/audio-example", *overrides]))

encoder = multissl.load_encoder(folder)  # weights + the log-mel settings and statistics, no pickles
train, test = encoder.domain.dataset("train"), encoder.domain.dataset("test")


def embed(ds):
    waves = torch.stack([ds[i]["x"] for i in range(len(ds))])  # float [n samples] at 16 kHz, as recorded
    return encoder.embed(waves).numpy(), [ds[i]["y"] for i in range(len(ds))]


(x_tr, y_tr), (x_te, y_te) = embed(train), embed(test)
few = [i for c in sorted(set(y_tr)) for i in [j for j, y in enumerate(y_tr) if y == c][:5]]  # 5 clips a word
acc = LogisticRegression(max_iter=2000).fit(x_tr[few], [y_tr[i] for i in few]).score(x_te, y_te)
print(f"words of unheard speakers from 5 labelled clips a word: {acc:.3f} (chance {1 / len(set(y_tr)):.3f})")
