"""Variable-length samples (tests/toys.py's ToySequences): the padding mask `batch["pad"]` is the transformer's
key padding mask, pooling skips it, masks cover only real tokens, and a padded batch gives every sample what it
gets alone. Every objective trains on such a domain, and its export embeds a plain list of sequences."""
import math

import pytest
import torch
from accelerate.utils import set_seed
from omegaconf import open_dict

import multissl
import toys
from multissl.cli import option_class, options
from multissl.contracts import compatible
from multissl.data import Collate, Views, to_device, train_loader
from multissl.encoder import Encoder
from multissl.objectives.mae import MAE
from multissl.schedules import step_values
from multissl.train import SSLModel, build_models, run

from tiny import assert_every_parameter_learns

TOL = 1e-5


def samples(domain, n=5):
    ds = domain.dataset("train")
    xs = [ds[i]["x"] for i in range(n)]
    assert len({len(x) for x in xs}) > 1, "the check needs samples of different lengths"
    return xs


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_a_padded_batch_gives_each_sample_its_own_representation(pool):
    torch.manual_seed(0)
    d = toys.ToySequences()
    enc = Encoder(d, dim=16, depth=2, heads=2, pool=pool).eval()
    xs = samples(d)
    x, pad = d.collate(xs)
    assert pad.shape == x.shape[:2] and pad.any() and (pad.sum(1) == x.shape[1] - torch.tensor([len(v) for v in xs])).all()
    with torch.no_grad():
        tokens, pooled = enc(x, pad=pad)
        for i, v in enumerate(xs):
            t1, p1 = enc(v[None], pad=torch.zeros(1, len(v), dtype=torch.bool))
            torch.testing.assert_close(pooled[i], p1[0], atol=TOL, rtol=TOL)
            torch.testing.assert_close(tokens[i, :len(v)], t1[0], atol=TOL, rtol=TOL)
        # with kept-token indices (padded with -1 where a sample keeps fewer)
        g = torch.Generator().manual_seed(1)
        keeps = [d.mask(1, g, n_tokens=len(v))[0][0] for v in xs]
        keep = Collate(d)([{"views": [v], "y": 0, "keep": k, "masked": k, "skipped": 0} for v, k in zip(xs, keeps)])["keep"]
        assert (keep < 0).any()
        _, pooled = enc(x, keep, pad=pad)
        for i, (v, k) in enumerate(zip(xs, keeps)):
            _, p1 = enc(v[None], k[None], pad=torch.zeros(1, len(v), dtype=torch.bool))
            torch.testing.assert_close(pooled[i], p1[0], atol=TOL, rtol=TOL)


def test_masks_cover_only_real_tokens():
    d = toys.ToySequences()
    views = Views(d.dataset("train"), d, 0, 1)
    for k in range(20):
        item = views[k]
        n = len(item["views"][0])
        assert item["keep"].max() < n and item["masked"].max() < n
        assert len(item["keep"]) + len(item["masked"]) == n  # every real token is kept or masked, once
        assert set(item["keep"].tolist()).isdisjoint(item["masked"].tolist())


def test_mae_on_a_padded_batch_predicts_and_scores_each_sample_as_alone():
    torch.manual_seed(0)
    d = toys.ToySequences()
    enc = Encoder(d, dim=16, depth=1, heads=2).eval()
    mae = MAE(enc, d, decoder_dim=16, decoder_depth=1, decoder_heads=2).eval()
    views = Views(d.dataset("train"), d, 3, 1)
    items = [views[k] for k in range(6)]
    batch = Collate(d)(items)
    assert "pad" in batch and (batch["masked"] < 0).any()
    with torch.no_grad():
        pred, _ = mae.predict(enc, batch)
        target = d.target(batch["views"][0])
        for i, it in enumerate(items):
            alone = Collate(d)([it])
            p1, _ = mae.predict(enc, alone)
            n = len(it["views"][0])
            torch.testing.assert_close(pred[i, :n], p1[0], atol=TOL, rtol=TOL)
            row = d.reconstruction_loss(pred[i:i + 1], target[i:i + 1], batch["masked"][i:i + 1])
            own = d.reconstruction_loss(p1, d.target(alone["views"][0]), alone["masked"])
            assert row.item() == pytest.approx(own.item(), rel=TOL, abs=TOL)  # padding is never scored


def toy_config(tiny, objective, *overrides, name="run"):
    cfg = tiny.config(f"objective={objective}", "data.batch_size=16", *overrides, name=name)
    with open_dict(cfg):
        cfg.domain = {"_target_": "toys.ToySequences"}
        cfg.meta.domain = "toyseq"
    return cfg


@pytest.mark.parametrize("objective", [o for o in options("objective")
                                       if compatible(toys.ToySequences, option_class("objective", o)) is None])
def test_every_objective_trains_on_variable_length_samples(tiny, objective):
    cfg = toy_config(tiny, objective)
    set_seed(0)
    d = toys.ToySequences()
    d.dataset("train")
    encoder, obj = build_models(cfg, d)
    model = SSLModel(encoder, obj).train()
    batch = next(iter(train_loader(d.dataset("train"), d, 0, obj.global_views, 16, 0, 1, 0, 1,
                                   corrupt=getattr(obj, "corrupt_view", False))))
    batch.pop("skipped")
    assert len(batch["pad"]) == len(batch["views"]) and all(p.any() for p in batch["pad"])
    loss, logs = model(batch, step_values(0, 10, cfg.optim, cfg.ema, 1e-3))
    assert torch.isfinite(loss)
    loss.backward()
    assert_every_parameter_learns(model)


def test_a_variable_length_run_exports_an_encoder_that_embeds_a_list(tiny):
    folder = run(toy_config(tiny, "mae", "trainer.max_steps=2"))
    final = tiny.metrics(folder)[-1]
    assert math.isfinite(final["knn_acc"]) and final["step"] == 2
    multissl.register(toys.ToySequences)  # a user's own domain: files may build it once registered
    enc = multissl.load_encoder(folder)
    raw = [[[0.1, 0.2, 0.3]] * 5, [[0.0, 1.0, 0.5]] * 9]  # plain Python lists, two lengths
    got = enc.embed(raw)
    x, pad = enc.domain.preprocess(raw)
    with torch.no_grad():
        want = enc.encoder(x, pad=pad)[1]
        alone = enc.encoder(x[:1, :5], pad=pad[:1, :5])[1]
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    torch.testing.assert_close(got[0], alone[0], atol=TOL, rtol=TOL)


def test_a_fixed_size_encoder_refuses_variable_length_samples(tiny):
    from multissl.errors import UserError
    cfg = tiny.config("objective=simclr", "encoder=mlp", tiny_encoder=False)
    with open_dict(cfg):
        cfg.domain = {"_target_": "toys.ToySequences"}
        cfg.meta.domain = "toyseq"
    with pytest.raises(UserError, match="different lengths but encoder=mlp needs a fixed size") as e:
        run(cfg)
    assert "\n" not in str(e.value)


def test_to_device_moves_tensors_inside_nested_batches():
    batch = {"views": [torch.zeros(2)], "pad": (torch.ones(2, dtype=torch.bool),), "name": "x", "n": 3}
    out = to_device(batch, "cpu")
    assert out["name"] == "x" and out["n"] == 3 and isinstance(out["pad"], tuple)
    assert out["views"][0].device.type == "cpu"
    if torch.cuda.is_available():
        assert to_device(batch, "cuda")["views"][0].is_cuda
