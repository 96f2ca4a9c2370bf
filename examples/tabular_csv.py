"""Pretrain a table encoder on a CSV, export it, and add its embeddings to a gradient-boosted model.

    python examples/tabular_csv.py                               # SCARF (simclr), 300 steps
    python examples/tabular_csv.py objective=mae trainer.max_steps=500

The CSV here is scikit-learn's breast-cancer table written to disk (any CSV works: set data.target to its
label column, or leave it unset for a table without labels). The last 100 rows play "new data".
"""
import sys

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier

import multissl
from multissl.cli import load_config
from multissl.train import run

table = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "malignant"})
table["malignant"] = 1 - table["malignant"]  # sklearn codes benign as 1
table.iloc[:-100].to_csv("patients.csv", index=False)
new = table.iloc[-100:]

overrides = sys.argv[1:] or ["objective=simclr", "trainer.max_steps=300"]
folder = run(load_config(["domain=tabular", "data.path=patients.csv", "data.target=malignant",
                          "run.dir=runs/tabular-example", *overrides]))

encoder = multissl.load_encoder(folder)  # weights + schema and column statistics, no pickles
known = table.iloc[:-100]
features = [c for c in table.columns if c != "malignant"]
emb_known, emb_new = encoder.embed(known).numpy(), encoder.embed(new).numpy()  # DataFrames in, [n d] out
for name, a, b in [("raw columns", known[features].to_numpy(), new[features].to_numpy()),
                   ("raw columns + ssl embeddings", np.hstack([known[features], emb_known]),
                    np.hstack([new[features], emb_new]))]:
    gbdt = HistGradientBoostingClassifier(random_state=0).fit(a, known["malignant"])
    print(f"gradient boosting on {name}: accuracy {gbdt.score(b, new['malignant']):.3f} on 100 new rows")
