"""The raw-input baseline at the end of a run: what a user would try before any encoder (the domain's `raw_features`:
raw pixels, log-mel frames, TF-IDF, the encoded columns, a random projection of frames) scored by the same kNN and
downstream metrics, logged as `raw/<metric>`, printed in the end-of-run table, and judged in one line."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from multissl.baseline import raw_verdict, table
from multissl.cli import options
from multissl.contracts import Downstream, optional
from multissl.monitor import eval_sets, subset
from multissl.domains import raw
from multissl.train import build_domain


def last(rows: list[dict]) -> dict:
    return rows[-1]


@pytest.mark.parametrize("domain", options("domain"))
def test_every_domain_logs_and_judges_its_raw_input(tiny, capsys, domain):
    cfg = tiny.config("trainer.baseline=true", f"domain={domain}", "trainer.max_steps=1")
    final = last(tiny.metrics(tiny.run("trainer.baseline=true", f"domain={domain}", "trainer.max_steps=1")))
    key = optional(build_domain(cfg), Downstream, "headline")[0]
    assert np.isfinite(final[f"raw/{key}"]) and f"untrained/{key}" in final
    err = capsys.readouterr().err
    assert "trained  untrained      raw" in err
    assert f"the raw input on this data: {key} {final[key]:.4f}, raw input {final[f'raw/{key}']:.4f}" in err


def weighted_knn(a, ya, b, yb, k=20, temperature=0.07) -> float:
    """Wu et al. 2018's weighted kNN, one query at a time: cosine neighbours vote exp(sim / T)."""
    a, b = F.normalize(a.double(), dim=1), F.normalize(b.double(), dim=1)
    right = 0
    for q, y in zip(b, yb):
        sim = a @ q
        top = sim.topk(min(k, len(a)))
        votes = {}
        for s, i in zip(top.values.tolist(), top.indices.tolist()):
            votes[int(ya[i])] = votes.get(int(ya[i]), 0.0) + np.exp(s / temperature)
        right += max(votes, key=votes.get) == int(y)
    return right / len(yb)


def test_raw_pixels_knn_is_the_knn_of_the_stored_pixels(tiny):
    """The digits are 8 x 8: their raw baseline is every stored pixel, scaled to [0, 1]."""
    folder = tiny.run("trainer.baseline=true", "trainer.max_steps=1")
    got = last(tiny.metrics(folder))["raw/knn_acc"]
    d = build_domain(tiny.config("trainer.baseline=true"))
    tr, te = eval_sets(d.dataset("train"), d.dataset("test"), 256)  # tiny runs' trainer.eval_samples
    pix = lambda ds: (torch.stack([ds[i]["x"].float().flatten() / 255 for i in range(len(ds))]),  # noqa: E731
                      torch.tensor([ds[i]["y"] for i in range(len(ds))]))
    (a, ya), (b, yb) = pix(tr), pix(te)
    assert got == pytest.approx(weighted_knn(a, ya, b, yb), abs=1e-9)


def test_a_domain_without_raw_features_gets_its_flattened_model_input_within_the_memory_bound(tiny, monkeypatch):
    """The digits normalized as the encoder reads them (a plugin domain's default), on the evenly spread samples
    whose features fit baseline.RAW_BYTES."""
    import multissl.baseline as baseline
    d = build_domain(tiny.config())
    monkeypatch.setattr(type(d), "raw_features", None)
    monkeypatch.setattr(baseline, "RAW_BYTES", 4 * 64 * 30)  # 30 digits of 64 numbers
    got = baseline.raw_metrics(d, d.dataset("train"), d.dataset("test"), "cpu", 20, 0.07, 256)["raw/knn_acc"]
    tr, te = (subset(s, 30) for s in eval_sets(d.dataset("train"), d.dataset("test"), 256))
    inputs = lambda ds: (torch.stack([d.eval_input(ds[i]["x"]).flatten() for i in range(len(ds))]),  # noqa: E731
                         torch.tensor([ds[i]["y"] for i in range(len(ds))]))
    (a, ya), (b, yb) = inputs(tr), inputs(te)
    assert got == pytest.approx(weighted_knn(a, ya, b, yb), abs=1e-9)


def test_tf_idf_is_scikit_learns_on_the_token_ids():
    sklearn = pytest.importorskip("sklearn.feature_extraction.text")
    docs = [[5, 6, 6, 7], [6, 8], [5, 5, 5, 9, 1], [9]]
    vocab, special = 10, torch.zeros(10, dtype=torch.bool)
    special[1] = True  # a special token ([CLS]) is no word
    ids = torch.tensor([d + [0] * (5 - len(d)) for d in docs])
    pad = torch.tensor([[False] * len(d) + [True] * (5 - len(d)) for d in docs])
    idf = raw.idf_of([[i for i in d if i != 1] for d in docs], vocab)
    got = raw.tf_idf(ids, pad, idf, special)
    vec = sklearn.TfidfVectorizer(analyzer=lambda d: [str(i) for i in d if i != 1], sublinear_tf=True)
    want = vec.fit_transform(docs).toarray()
    cols = [int(t) for t in vec.get_feature_names_out()]
    torch.testing.assert_close(got[:, cols], torch.tensor(want, dtype=torch.float32), rtol=1e-5, atol=1e-6)
    assert got[:, [i for i in range(vocab) if i not in cols]].abs().sum() == 0


def test_table_rows_one_hot_categories_and_flag_missing_numbers():
    x = torch.tensor([[0.5, 2.0], [float("nan"), 3.0]])
    got = raw.table_rows(x, [0, 4])  # a number, a category of 4 ids
    assert got.tolist() == [[0.5, 0.0, 0, 0, 1, 0], [0.0, 1.0, 0, 0, 0, 1]]


def test_large_inputs_are_projected_the_same_way_every_time():
    x = torch.randn(3, 4, 30, 30)
    a, b = raw.projected(x), raw.projected(x.clone())
    assert a.shape == (3, raw.PROJECTED) and torch.equal(a, b)
    small = torch.randn(3, 7)
    assert torch.equal(raw.projected(small), small)


def test_pixels_are_area_averaged_to_32_per_side():
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    got = raw.pixels(x)
    want = (x.float() / 255).unfold(2, 2, 2).unfold(3, 2, 2).mean((-1, -2))  # 2 x 2 blocks
    torch.testing.assert_close(got, want.reshape(2, -1))
    clips = torch.randint(0, 256, (2, 4, 3, 16, 16), dtype=torch.uint8)
    assert raw.pixels(clips).shape == (2, 4 * 3 * 16 * 16)


def test_the_table_and_the_verdict_show_the_raw_input():
    metrics = {"knn_acc": 0.8, "untrained/knn_acc": 0.5, "raw/knn_acc": 0.9, "rankme": 3.0, "untrained/rankme": 2.0}
    lines = table(metrics)
    assert lines[0].split() == ["trained", "untrained", "raw"]
    assert lines[1].split() == ["knn_acc", "0.8000", "0.5000", "0.9000"]
    assert lines[2].split() == ["rankme", "3.0000", "2.0000", "-"]
    headline = type("D", (), {"headline": ("knn_acc", True, True)})()
    assert raw_verdict(metrics, headline).startswith("the encoder does not beat the raw input on this data: knn_acc "
                                                     "0.8000, raw input 0.9000 (-0.1000")
    assert raw_verdict({"knn_acc": 0.95, "raw/knn_acc": 0.9}, headline).startswith("the encoder beats")
