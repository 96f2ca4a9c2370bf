"""multissl.testing: each check passes on a built-in (and on a plugin class named by module path) and fails, naming
what is wrong, on a deliberately broken toy defined here."""
from pathlib import Path

import pytest
import torch
from torch import nn

import toys
from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder, encode_views
from multissl.errors import UserError
from multissl.testing import check_domain, check_encoder, check_objective, check_parity, config, spec


class CoupledViews(ImageDomain):
    """Its batched apply mixes the samples of a batch: a sample's views depend on what it is batched with."""

    def apply(self, d):
        return [v + 0.5 * v.mean(0, keepdim=True) for v in super().apply(d)]


class GlobalNoise(ImageDomain):
    """Its apply draws noise from torch's global generator instead of the draws: views depend on the order drawn."""

    def apply(self, d):
        return [v + 0.1 * torch.randn_like(v) for v in super().apply(d)]


class Unscaled(ImageDomain):
    """Its per-sample evaluation input forgets the normalisation its batched preprocess applies."""

    def eval_input(self, x):
        return x.float() / 255


class Restless(ImageDomain):
    """Its state() is not what its constructor takes back: it counts how often it was rebuilt from a state."""

    def __init__(self, *args, state=None, **kwargs):
        super().__init__(*args, state=None if state is None else {k: v for k, v in state.items() if k != "builds"},
                         **kwargs)
        self.builds = 0 if state is None else state["builds"] + 1

    def state(self):
        return super().state() | {"builds": self.builds}


class DeadHead(toys.QueueContrast):
    """A head its loss never uses: no gradient reaches it."""

    def __init__(self, encoder, domain, size: int = 48, dim: int = 16, temperature: float = 0.2):
        super().__init__(encoder, domain, size, dim, temperature)
        self.unused = nn.Linear(4, 4)


class Forgetful(Encoder):
    """A random shift of its representation that it does not save (a non-persistent buffer): its export reloads to
    another encoder."""

    def __init__(self, domain, dim: int = 16, depth: int = 1, heads: int = 2):
        super().__init__(domain, dim, depth, heads)
        self.register_buffer("shift", torch.randn(dim), persistent=False)

    def forward(self, x, keep=None, pad=None):
        tokens, pooled = super().forward(x, keep, pad)
        return tokens, pooled + self.shift


class LocalSpread(nn.Module):
    """A batch statistic that is not gathered: each process spreads its own samples around its own mean, so 2
    processes compute another loss than 1."""
    batch_statistics = True

    def __init__(self, encoder, domain, dim: int = 8):
        super().__init__()
        self.head = nn.Linear(encoder.dim, dim)

    def forward(self, encoder, batch, sched):
        rep = encode_views(encoder, batch["views"][:1])[0]
        z = self.head(rep)
        return -(z - z.mean(0)).square().mean(), {"rep": rep.detach()}


# ---- a built-in and a plugin pass ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_built_in_domain_passes():
    done = check_domain("image", parity=False)
    assert done["pair"] == "domain=image objective=simclr encoder=transformer"
    assert done["batched"] == {"batched_views": True, "eval_raw": True} and done["export"]["embed"]
    assert "parity" not in done and done["step"]["parameters"] > 0


@pytest.mark.slow
def test_a_built_in_encoder_passes_at_its_own_sizes():
    done = check_encoder("mlp", objective="byol", parity=False, overrides=("encoder.hidden=[32]",))
    assert done["pair"] == "domain=image objective=byol encoder=mlp" and done["export"]["samples"] == 6


@pytest.mark.slow
@pytest.mark.distributed
def test_a_plugin_objective_passes_on_1_and_2_processes():
    """A class by object, found again by module path in the 2 processes."""
    done = check_objective(toys.QueueContrast)
    assert done["pair"] == "domain=image objective=toys:QueueContrast encoder=transformer"
    assert done["parity"]["gradients"] == done["step"]["parameters"]


# ---- broken toys fail, naming what is wrong ------------------------------------------------------------------------
def test_views_that_depend_on_the_batch_fail():
    with pytest.raises(AssertionError, match=r"sample \d+'s view \d+ in a batch of 6 differs from its view alone"):
        check_domain(CoupledViews, parity=False)


def test_views_drawn_from_the_global_generator_fail():
    with pytest.raises(AssertionError, match=r"draw \d+'s view 0 changes when drawn in another order"):
        check_domain(GlobalNoise, parity=False)


def test_evaluation_inputs_unlike_the_batched_preprocess_fail():
    with pytest.raises(AssertionError, match=r"Unscaled \(domain image\): preprocess of a batch of eval_raw samples "
                                             r"differs from their eval_input \(input\)"):
        check_domain(Unscaled, parity=False)


@pytest.mark.slow
def test_a_state_the_constructor_does_not_take_back_fails():
    with pytest.raises(AssertionError, match=r"domain=.*Restless .*: the domain rebuilt from its state \(state=\) "
                                             r"gives another state\(\)"):
        check_domain(Restless, parity=False)


def test_a_parameter_without_gradient_fails():
    with pytest.raises(AssertionError, match=r"objective=.*DeadHead .*no gradient reaches "
                                             r"\['objective.unused.weight', 'objective.unused.bias'\]"):
        check_objective(DeadHead, parity=False)


@pytest.mark.slow
def test_an_export_that_does_not_reload_fails():
    with pytest.raises(AssertionError, match=r"encoder=.*Forgetful: the export in .* does not reproduce the trained "
                                             r"encoder \(embed of eval_raw\)"):
        check_encoder(Forgetful, parity=False)


@pytest.mark.distributed
def test_an_ungathered_batch_statistic_fails_on_2_processes(monkeypatch):
    """Named by module path as a plugin's class is (this file, importable from its folder)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = config("image", "test_testing:LocalSpread")
    with pytest.raises(AssertionError, match=r"objective=test_testing:LocalSpread .*: the first step's loss is .* on 2 "
                                             r"processes and .* on 1"):
        check_parity(cfg)


# ---- names and skips -----------------------------------------------------------------------------------------------
def test_a_class_is_named_by_module_path():
    assert spec(CoupledViews) == f"{__name__}:CoupledViews" and spec("image") == "image"
    with pytest.raises(UserError, match="pass the class itself, not an instance"):
        spec(toys.ToySequences())


def test_an_unknown_name_is_one_line():
    with pytest.raises(UserError, match=r"domain=nope objective=simclr: .*unknown domain 'nope'") as e:
        check_domain("nope")
    assert "\n" not in str(e.value)


def test_parity_is_skipped_with_a_warning_without_gloo(monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_gloo_available", lambda: False)
    with pytest.warns(UserWarning, match="domain=image objective=simclr encoder=transformer: 1 vs 2 process parity "
                                         "not checked"):
        assert check_parity(config()) == {"skipped": "no gloo"}
