"""The example plugin package (examples/plugin, multissl-sensors), imported in process from its folder: the synthesized
sensor data, the domain's views, span masks, state and files, the spectral contrastive loss against the paper's code,
and one training step of its objective (and MAE) with the transformer and its 1-D CNN encoder."""
import inspect
import json
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from multissl.data import make_views, objective_loader, stack_draws
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.objectives.mae import MAE

from tiny import assert_every_parameter_learns

PLUGIN = Path(__file__).parents[1] / "examples" / "plugin"
sys.path.insert(0, str(PLUGIN))

from multissl_sensors.data import synthesize  # noqa: E402
from multissl_sensors.domain import SensorDomain, resample, span_mask, warp_positions  # noqa: E402
from multissl_sensors.encoder import Conv1dEncoder  # noqa: E402
from multissl_sensors.spectral import SpectralContrastive, spectral_contrastive_loss  # noqa: E402

SCHED = {"step": 0, "total_steps": 10, "progress": 0.0, "lr": 1e-3, "wd": 0.0, "ema": 0.99}


@pytest.fixture(scope="module")
def sensors() -> SensorDomain:
    d = SensorDomain()
    d.dataset("train")
    return d


def windows(ds) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([ds[i]["x"] for i in range(len(ds))]), torch.tensor([ds[i]["y"] for i in range(len(ds))])


def centroid_accuracy(train: torch.Tensor, y_train, test: torch.Tensor, y_test) -> float:
    """Nearest class mean of the training features [n f], scored on the test features."""
    means = torch.stack([train[y_train == k].mean(0) for k in range(int(y_train.max()) + 1)])
    return float((torch.cdist(test, means).argmin(1) == y_test).float().mean())


# ---- the package ------------------------------------------------------------------------------------------------

def test_every_entry_point_names_a_class_whose_signature_is_plain_config():
    points = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]["entry-points"]
    found = {}
    for group, names in points.items():
        for name, spec in names.items():
            module, _, cls = spec.partition(":")
            found[group, name] = getattr(import_module(module), cls)
    assert found == {("multissl.domains", "sensors"): SensorDomain, ("multissl.encoders", "conv1d"): Conv1dEncoder,
                     ("multissl.objectives", "spectral_contrastive"): SpectralContrastive}
    assert SensorDomain.name == "sensors" and Conv1dEncoder.domains == ("sensors",)
    for cls in found.values():  # keyword defaults a config can hold (the engine passes data/state, domain, encoder)
        for p in inspect.signature(cls).parameters.values():
            if p.name not in ("data", "state", "domain", "encoder"):
                assert p.default is not p.empty and json.loads(json.dumps(p.default)) == (
                    list(p.default) if isinstance(p.default, tuple) else p.default), (cls, p.name)


# ---- data -------------------------------------------------------------------------------------------------------

def test_default_data_is_deterministic_and_separable_by_its_spectrum(sensors):
    x, y = synthesize(64, seed=5)
    x2, y2 = synthesize(64, seed=5)
    assert x.shape == (64, 3, 128) and x.dtype == np.float32 and np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(synthesize(64, seed=6)[0], x)
    train, test = windows(sensors.dataset("train")), windows(sensors.dataset("test"))
    assert torch.equal(train[0][:5], windows(SensorDomain().dataset("train"))[0][:5])  # another build, same data
    assert sensors.num_classes == 4 and set(train[1].tolist()) == set(test[1].tolist()) == {0, 1, 2, 3}

    def spectrum(w):  # a trivial, phase-free feature: the magnitude spectrum averaged over the channels
        return torch.fft.rfft(w - w.mean(2, keepdim=True)).abs().mean(1)
    assert centroid_accuracy(spectrum(train[0]), train[1], spectrum(test[0]), test[1]) > 0.9
    # the phases are random: the raw windows' class means do not separate them (what the views must learn)
    assert centroid_accuracy(train[0].flatten(1), train[1], test[0].flatten(1), test[1]) < 0.6


def test_npz_with_labels_and_npy_without(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 2, 32)).astype(np.float64)
    np.savez(tmp_path / "w.npz", x=x, y=np.array(["sit", "walk"] * 10))
    d = SensorDomain(data={"path": str(tmp_path / "w.npz")})
    train, test = d.dataset("train"), d.dataset("test")
    assert (len(train), len(test), d.num_classes, d.channels, d.steps, d.num_tokens) == (16, 4, 2, 2, 32, 4)
    assert train[0]["x"].dtype == torch.float32 and {train[i]["y"] for i in range(16)} == {0, 1}
    np.save(tmp_path / "w.npy", x)
    d = SensorDomain(data={"path": str(tmp_path / "w.npy")}, test_fraction=0.0)
    assert len(d.dataset("train")) == 20 and d.dataset("test") is None and d.num_classes is None
    assert d.dataset("train")[3]["y"] == -1


@pytest.mark.parametrize("array, match", [(np.zeros((4, 32)), r"\[n, channels, steps\]"),
                                          (np.zeros((4, 2, 30)), r"not a multiple of domain.patch=8")])
def test_bad_windows_are_one_line(tmp_path, array, match):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(UserError, match=match) as e:
        SensorDomain(data={"path": str(tmp_path / "bad.npy")}).dataset("train")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"\.npy or \.npz"):
        SensorDomain(data={"path": str(tmp_path / "missing.csv")}).dataset("train")


@pytest.mark.parametrize("key, value", [("patch", 0), ("mask_ratio", 1.0), ("knots", 1), ("test_fraction", 1.0)])
def test_bad_settings_are_one_line(key, value):
    with pytest.raises(UserError, match=f"domain.{key}={value}") as e:
        SensorDomain(**{key: value})
    assert "\n" not in str(e.value)


# ---- views ------------------------------------------------------------------------------------------------------

def test_views_are_deterministic_in_the_rng_and_differ_from_the_input(sensors):
    x = sensors.dataset("train")[0]["x"]
    a, b = (sensors.views(x, torch.Generator().manual_seed(3), 2) for _ in range(2))
    other = sensors.views(x, torch.Generator().manual_seed(4), 2)
    clean = sensors.eval_input(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not torch.equal(a[0], other[0])
    assert a[0].shape == clean.shape == (3, 128) and not torch.allclose(a[0], a[1])
    assert all((v - clean).abs().mean() > 0.05 for v in a)
    # a batch's views are each sample's views made alone
    ds = sensors.dataset("train")
    draws = [sensors.draw(ds[i]["x"], torch.Generator().manual_seed(i), 2) for i in range(3)]
    batched = sensors.apply(stack_draws(draws))
    for i, d in enumerate(draws):
        for v, alone in zip(batched, sensors.apply(stack_draws([d]))):
            torch.testing.assert_close(v[i], alone[0], rtol=0, atol=1e-6)


def test_views_are_float32_under_a_float64_default(sensors):
    """The fp64 parity tier builds models under a float64 default dtype; the draws stay those of the window."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        views = sensors.views(sensors.dataset("train")[0]["x"], torch.Generator().manual_seed(0), 2)
    finally:
        torch.set_default_dtype(previous)
    assert all(v.dtype == torch.float32 for v in views)


def test_each_augmentation_off_gives_the_input_back_and_the_warp_is_monotone(sensors):
    x = sensors.dataset("train")[1]["x"]
    off = SensorDomain(jitter=0.0, scale=0.0, warp=0.0, state=sensors.state())
    for v in off.views(x, torch.Generator().manual_seed(0), 2):
        torch.testing.assert_close(v, sensors.eval_input(x), rtol=0, atol=1e-5)
    pos = warp_positions(torch.tensor([[0.6, 1.4, 0.8, 1.2]]), 128)[0]
    assert pos[0] == 0 and pos[-1] == pytest.approx(127) and (pos.diff() > 0).all()
    assert not torch.allclose(pos, torch.arange(128.0))
    steps = torch.arange(10.0).expand(2, 3, 10)  # read at whole steps and halfway between
    torch.testing.assert_close(resample(steps, torch.tensor([[0.0, 4.0, 9.0], [0.5, 2.5, 8.5]])),
                               torch.tensor([[0.0, 4, 9], [0.5, 2.5, 8.5]])[:, None].expand(2, 3, 3))


# ---- masks ------------------------------------------------------------------------------------------------------

def runs(mask_row: torch.Tensor) -> list[int]:
    """Lengths of the maximal runs of True in a [n] bool row."""
    out, n = [], 0
    for m in [*mask_row.tolist(), False]:
        if m:
            n += 1
        elif n:
            out, n = [*out, n], 0
    return out


@pytest.mark.parametrize("n, ratio, span, spans", [(16, 0.5, 4, 2), (16, 0.45, 3, 3), (12, 0.5, 1, 6)])
def test_span_masks_have_the_right_counts_and_are_contiguous(n, ratio, span, spans):
    keep, masked = span_mask(64, n, ratio, span, torch.Generator().manual_seed(0))
    m = round(ratio * n)
    assert keep.shape == (64, n - m) and masked.shape == (64, m)
    assert torch.equal(torch.cat([keep, masked], 1).sort(1).values, torch.arange(n).expand(64, n))
    assert torch.equal(masked, masked.sort(1).values) and torch.equal(keep, keep.sort(1).values)
    starts = set()
    for row in masked:
        flag = torch.zeros(n, dtype=torch.bool)
        flag[row] = True
        lengths = runs(flag)
        assert sum(lengths) == m and len(lengths) <= spans  # whole spans, never scattered tokens
        if m % span == 0:
            assert all(k % span == 0 for k in lengths)
        starts.add(int(row[0]))
    assert len(starts) > 3  # placed at random
    again = span_mask(64, n, ratio, span, torch.Generator().manual_seed(0))
    assert torch.equal(again[1], masked)


# ---- the loss ---------------------------------------------------------------------------------------------------

def paper_loss(z1: torch.Tensor, z2: torch.Tensor, mu: float = 1.0) -> torch.Tensor:
    """The spectral contrastive loss as the paper's code writes it (mean over all entries times d; the off-diagonal
    squares through triu + tril)."""
    mask1 = (torch.norm(z1, p=2, dim=1) < np.sqrt(mu)).float().unsqueeze(1)
    mask2 = (torch.norm(z2, p=2, dim=1) < np.sqrt(mu)).float().unsqueeze(1)
    z1 = mask1 * z1 + (1 - mask1) * torch.nn.functional.normalize(z1, dim=1) * np.sqrt(mu)
    z2 = mask2 * z2 + (1 - mask2) * torch.nn.functional.normalize(z2, dim=1) * np.sqrt(mu)
    part1 = -2 * torch.mean(z1 * z2) * z1.shape[1]
    square = torch.matmul(z1, z2.T) ** 2
    part2 = torch.mean(torch.triu(square, diagonal=1) + torch.tril(square, diagonal=-1)) * z1.shape[0] / (
        z1.shape[0] - 1)
    return (part1 + part2) / mu


@pytest.mark.parametrize("mu", [1.0, 3.0])
def test_loss_equals_the_papers_code(mu):
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(12, 6, generator=g, dtype=torch.float64) * torch.rand(12, 1, generator=g, dtype=torch.float64) * 3
    z2 = z1 + 0.3 * torch.randn(12, 6, generator=g, dtype=torch.float64)  # rows on both sides of the norm cap
    assert ((z1.norm(dim=1) < mu ** 0.5).any() and (z1.norm(dim=1) > mu ** 0.5).any())
    torch.testing.assert_close(spectral_contrastive_loss(z1, z2, mu), paper_loss(z1, z2, mu), rtol=1e-12, atol=1e-12)


def test_loss_invariances_and_its_minimum():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    loss = spectral_contrastive_loss(z1, z2)
    perm = torch.randperm(10, generator=g)
    torch.testing.assert_close(spectral_contrastive_loss(z1[perm], z2[perm]), loss)  # the order of the samples
    torch.testing.assert_close(spectral_contrastive_loss(z2, z1), loss)  # which view is which
    # orthonormal embeddings, equal for both views: positives at their largest product, no negative overlap
    eye = torch.eye(4, 8)
    assert float(spectral_contrastive_loss(eye, eye)) == pytest.approx(-2.0)
    assert float(spectral_contrastive_loss(5 * eye, 5 * eye, mu=4.0)) == pytest.approx(-2.0)  # capped at norm 2


# ---- training steps ---------------------------------------------------------------------------------------------

def first_batch(domain, objective, size: int = 8) -> dict:
    """The engine's first batch for this objective: its loader (draws per sample) and the batched apply."""
    loader = objective_loader(domain.dataset("train"), domain, objective, 0, size, 0, 1, 0, 1)
    batch = make_views(domain, next(iter(loader)))
    batch.pop("skipped")
    return batch


@pytest.mark.parametrize("make_encoder", [lambda d: Encoder(d, dim=16, depth=1, heads=2),
                                          lambda d: Conv1dEncoder(d, dim=16, widths=(8,))],
                         ids=["transformer", "conv1d"])
def test_one_step_of_the_objective_trains_every_parameter(sensors, make_encoder):
    torch.manual_seed(0)
    encoder = make_encoder(sensors)
    objective = SpectralContrastive(encoder, sensors, projector=(32, 16))
    loss, logs = objective(encoder, first_batch(sensors, objective), SCHED)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and all(torch.isfinite(logs[k]) for k in ("pos", "neg"))
    assert logs["rep"].shape == (8, 16) and not logs["rep"].requires_grad
    assert_every_parameter_learns(nn.ModuleList([encoder, objective]))


def test_mae_trains_on_the_domains_span_masks(sensors):
    torch.manual_seed(0)
    encoder = Encoder(sensors, dim=16, depth=1, heads=2)
    objective = MAE(encoder, sensors, decoder_dim=16, decoder_depth=1, decoder_heads=2)
    batch = first_batch(sensors, objective)
    assert batch["masked"].shape == (8, 8) and sensors.target(batch["views"][0]).shape == (8, 16, 24)
    loss, _ = objective(encoder, batch, SCHED)
    loss.backward()
    assert torch.isfinite(loss)
    assert_every_parameter_learns(nn.ModuleList([encoder, objective]))


def test_conv1d_has_no_tokens_to_mask(sensors):
    encoder = Conv1dEncoder(sensors, dim=16)
    tokens, pooled = encoder(torch.zeros(2, 3, 128))
    assert tokens is None and pooled.shape == (2, 16)
    with pytest.raises(UserError, match="encoder=transformer"):
        encoder(torch.zeros(2, 3, 128), keep=torch.zeros(2, 4, dtype=torch.long))


# ---- state ------------------------------------------------------------------------------------------------------

def test_state_round_trip_gives_the_same_model_input_without_the_data(sensors, tmp_path):
    state = json.loads(json.dumps(sensors.state()))  # what an export's config.json holds
    rebuilt = SensorDomain(state=state)
    x = sensors.dataset("test")[0]["x"]
    assert torch.equal(rebuilt.eval_input(x), sensors.eval_input(x)) and rebuilt._splits is None
    raw = np.stack([sensors.dataset("test")[i]["x"].numpy() for i in range(3)])
    torch.testing.assert_close(rebuilt.preprocess(raw), torch.stack([sensors.eval_input(torch.from_numpy(w))
                                                                     for w in raw]))
    assert rebuilt.embedder(16)(rebuilt.preprocess(raw)).shape == (3, 16, 16)
    with pytest.raises(UserError, match=r"\[batch, 3, 128\]"):
        rebuilt.preprocess(raw[:, :2])
    # with data and a state, the statistics are the state's, not refitted on that data
    np.save(tmp_path / "w.npy", 10 + np.random.default_rng(0).normal(size=(8, 3, 128)))
    other = SensorDomain(data={"path": str(tmp_path / "w.npy")}, state=state)
    other.dataset("train")
    assert other.state() == state
