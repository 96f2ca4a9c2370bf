"""encoder=bag: the bag of hashed n-grams (fastText) trains with contrastive, distillation and masked objectives
(every parameter learns), its n-grams are the windows of consecutive tokens a loop finds, a padded batch equals each
text alone, a masked token is never read, and a run exports an encoder that embeds as it trained."""
import pytest
import torch
from accelerate.utils import set_seed

import multissl
from multissl.data import objective_loader
from multissl.domains.text.bag import MODULUS, PRIME, ngram_ids
from multissl.schedules import step_values
from multissl.train import SSLModel, build_domain, build_models

from tiny import assert_every_parameter_learns

LINES = [f"{w} number {i} is {'odd' if i % 2 else 'even'} and {w}s like it" for i, w in
         enumerate(["cat", "dog", "bird", "fish", "frog", "mouse", "horse", "sheep"] * 5)]
BAG = ("encoder=bag", "encoder.dim=16", "encoder.buckets=64")
TOL = 1e-5


@pytest.fixture
def corpus(tmp_path):
    f = tmp_path / "lines.txt"
    f.write_text("\n".join(LINES), encoding="utf-8")
    return f


def text_args(tmp_path, corpus):
    return ("domain=text", f"data.path={corpus}", "domain.vocab_size=120", f"domain.cache_dir={tmp_path / 'cache'}")


def test_ngram_ids_hash_every_window_of_valid_consecutive_tokens():
    ids = torch.tensor([[3, 7, 2, 9, 0]])
    valid = torch.tensor([[True, True, True, True, False]])
    h, ok = ngram_ids(ids, valid, 3)
    for i in range(5):
        window = ids[0, i - 2:i + 1].tolist() if i >= 2 else None
        assert bool(ok[0, i]) == (window is not None and all(valid[0, i - 2:i + 1]))
        if ok[0, i]:  # ((a * P + b) * P + c) mod M, in Python's exact integers
            a, b, c = window
            assert int(h[0, i]) == (a * PRIME ** 2 + b * PRIME + c) % MODULUS


@pytest.mark.parametrize("objective", ["simclr", "byol", "mae"])
def test_one_step_trains_every_bag_parameter(tiny, tmp_path, corpus, objective):
    cfg = tiny.config(*text_args(tmp_path, corpus), *BAG, f"objective={objective}", "data.batch_size=8",
                      tiny_encoder=False)
    set_seed(0)
    domain = build_domain(cfg)
    model = SSLModel(*build_models(cfg, domain)).train()
    batch = next(iter(objective_loader(domain.dataset("train"), domain, model.objective, 0, 8, 0, 1, 0, 1)))
    batch.pop("skipped")
    loss, _ = model(batch, step_values(0, 10, cfg.optim, cfg.ema, 1e-3))
    assert torch.isfinite(loss)
    loss.backward()
    assert_every_parameter_learns(model)


def test_a_padded_batch_equals_each_text_alone_and_masked_tokens_are_not_read(tiny, tmp_path, corpus):
    cfg = tiny.config(*text_args(tmp_path, corpus), *BAG, tiny_encoder=False)
    domain = build_domain(cfg)
    enc = build_models(cfg, domain)[0].eval()
    texts = ["a cat", "the horse number 3 is odd and horses like it", "frog"]
    x, pad = domain.preprocess(texts)
    with torch.no_grad():
        tokens, pooled = enc(x, pad=pad)
        for i, t in enumerate(texts):
            x1, pad1 = domain.preprocess([t])
            t1, p1 = enc(x1, pad=pad1)
            torch.testing.assert_close(pooled[i], p1[0], atol=TOL, rtol=TOL)
            torch.testing.assert_close(tokens[i, :t1.shape[1]], t1[0], atol=TOL, rtol=TOL)
        keep = torch.tensor([[0, 1, 3, 4]])  # position 2 masked: whatever id it holds, the kept tokens are the same
        other = x[1:2].clone()
        other[0, 2] = (other[0, 2] + 5) % domain.vocab.size
        a, _ = enc(x[1:2], keep=keep, pad=pad[1:2])
        b, _ = enc(other, keep=keep, pad=pad[1:2])
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_a_run_exports_a_bag_that_embeds_as_it_trained(tiny, tmp_path, corpus):
    folder = tiny.run(*text_args(tmp_path, corpus), *BAG, "trainer.max_steps=2", tiny_encoder=False)
    enc = multissl.load_encoder(folder)
    out = enc.embed(["a cat", "frog number 2"])
    assert out.shape == (2, 16) and torch.isfinite(out).all()
