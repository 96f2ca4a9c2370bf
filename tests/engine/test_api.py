"""multissl.fit: a run from Python that returns its folder, metrics and encoder, may be called again in the same
process, raises UserError instead of exiting, leaves signal handlers alone unless asked, takes classes of the user's
own, and hands in-memory data to the domain."""
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer

import multissl
import toys
from multissl.api import literal, overrides
from multissl.errors import UserError

TINY = {"encoder.dim": 16, "encoder.depth": 1, "encoder.heads": 2, "data.num_workers": 0, "data.batch_size": 16,
        "trainer": {"max_steps": 2, "eval_every": 0, "log_every": 1, "baseline": False, "eval_samples": 64}}


def test_settings_become_command_line_overrides():
    assert overrides({"trainer": {"max_steps": 5, "resume": None}, "domain.crop_scale": (0.2, 1.0),
                      "data.path": "my data/x,y.csv", "trainer.baseline": True}) == [
        "trainer.max_steps=5", "trainer.resume=null", "domain.crop_scale=[0.2,1.0]",
        'data.path="my data/x,y.csv"', "trainer.baseline=true"]
    assert literal({"env": "CartPole-v1", "steps": 10}) == '{env:"CartPole-v1",steps:10}'


def test_fit_leaves_the_objective_and_the_encoder_to_the_domain_unless_named(monkeypatch):
    """As a command that names none: the domain's choice for its data (domain=rl: spr), else the config's default."""
    composed = []

    class Composed(Exception):
        pass

    def compose(argv):
        composed.append(argv)
        raise Composed
    monkeypatch.setattr(multissl.api, "compose_config", compose)
    named = ["domain=rl", "objective=byol", "encoder=mlp"]
    for args, want in ((("rl",), ["domain=rl"]), (("rl", "byol", "mlp"), named)):
        with pytest.raises(Composed):
            multissl.fit(*args)
        assert composed[-1] == want


def test_fit_twice_in_one_process_returns_runs(tmp_path):
    a = multissl.fit("tabular", "vicreg", **TINY, run={"dir": str(tmp_path / "a")})
    b = multissl.fit("tabular", "simclr", **TINY, run={"dir": str(tmp_path / "b")})
    assert a.path == tmp_path / "a" and b.path == tmp_path / "b"
    for r in (a, b):
        assert 0 <= r.metrics["knn_acc"] <= 1 and r.metrics["step"] == 2
        assert [row["step"] for row in r.rows if "loss" in row] == [1, 2]
        assert r.encoder.embed(load_breast_cancer(as_frame=True).frame.head(3)).shape == (3, 16)


def test_fit_raises_user_errors_instead_of_exiting(tmp_path):
    with pytest.raises(UserError, match="unknown objective 'nosuch'"):
        multissl.fit("tabular", "nosuch")
    with pytest.raises(UserError, match="unknown key trainer.max_step;"):
        multissl.fit("tabular", "simclr", **{"trainer.max_step": 3})
    with pytest.raises(UserError, match="does not exist"):
        multissl.fit("tabular", "simclr", data=tmp_path / "missing.csv", **TINY, run={"dir": str(tmp_path / "r")})


def test_signal_handlers_are_installed_only_when_asked(tmp_path, monkeypatch):
    calls = []
    real = signal.signal
    monkeypatch.setattr(signal, "signal", lambda sig, handler: calls.append(sig) or real(sig, handler))
    before = signal.getsignal(signal.SIGTERM)
    multissl.fit("tabular", "simclr", **TINY, run={"dir": str(tmp_path / "a")})
    assert calls == [] and signal.getsignal(signal.SIGTERM) is before
    multissl.fit("tabular", "simclr", signals=True, **TINY, run={"dir": str(tmp_path / "b")})
    assert set(calls) == {signal.SIGTERM, signal.SIGUSR1, signal.SIGINT} and signal.getsignal(signal.SIGTERM) is before


def test_fit_takes_classes_of_the_users_own_and_opens_their_export(tmp_path):
    r = multissl.fit(toys.ToySequences, toys.QueueContrast, **{**TINY, "data.batch_size": 8},
                     run={"dir": str(tmp_path / "run")})
    assert r.metrics["step"] == 2
    assert r.encoder.embed([torch.randn(5, 3), torch.randn(9, 3)]).shape == (2, 16)


def test_fit_trains_on_a_dataframe_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=90), "b": rng.normal(size=90), "kind": rng.choice(["x", "y"], 90),
                          "label": rng.integers(0, 2, 90)})
    r = multissl.fit("tabular", "simclr", data=frame, **TINY, **{"data.target": "label"},
                     run={"dir": str(tmp_path / "run")})
    assert "knn_acc" in r.metrics and not list(tmp_path.glob("run/*.csv"))
    assert r.encoder.embed(frame.head(4)).shape == (4, 16)
