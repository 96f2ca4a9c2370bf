"""The contract checks of multissl's own test suite, for anyone's domain, objective or encoder: a plugin's tests call
one function.

    from multissl.testing import check_domain

    def test_my_domain():
        check_domain(MyDomain)  # a class, "my_package.domains:MyDomain", or a registry name such as "image"

`check_domain`, `check_objective` and `check_encoder` pair the class under test with built-ins (images, SimCLR, a tiny
transformer unless told otherwise), compose the config as the command line does (`multissl.cli.load_config`) and run
every check multissl runs on its own classes (`check_pair`). Each raises AssertionError naming what failed and returns
a small dict of what it checked. The checks themselves (`check_step`, `check_draws`, `check_batched`, `check_export`,
`check_parity`) take a composed config or a built domain: multissl's suite calls them on its built-ins, so the two
never drift.

The 2-process side of `check_parity` is this package run by torchrun (`python -m multissl.testing FOLDER`)."""
import contextlib
import io
import sys
import tempfile
from pathlib import Path

from multissl.build import build_domain
from multissl.cli import load_config
from multissl.errors import UserError
from multissl.testing.checks import (assert_every_parameter_learns, check_batched, check_draws, check_export,
                                     check_step, first_step, item_views, pair, tiny_run)
from multissl.testing.parity import PARITY_TOL, check_parity

__all__ = ["check_domain", "check_objective", "check_encoder", "check_pair", "config", "spec", "check_step",
           "check_draws", "check_batched", "check_export", "check_parity", "first_step", "item_views",
           "assert_every_parameter_learns", "tiny_run", "TINY", "TINY_ENCODER", "PARITY_TOL"]

# Small enough that a training step takes well under a second on 2 busy cores.
TINY_ENCODER = ("encoder.dim=16", "encoder.depth=1", "encoder.heads=2")  # the transformer's keys: its option only
TINY = ("data.batch_size=16", "data.num_workers=0", "trainer.log_every=1", "trainer.eval_every=0",
        "trainer.eval_samples=64", "trainer.baseline=false")


# ---- the three entry points ------------------------------------------------------------------------------------
def check_domain(domain, *, objective="simclr", encoder=None, overrides=(), parity=True) -> dict:
    """Every contract check (`check_pair`) of `domain` — a registry name, "module:Class" or a class — trained by
    `objective` with `encoder` (None: the tiny transformer)."""
    return check_pair(config(domain, objective, encoder, overrides), parity)


def check_objective(objective, *, domain="image", encoder=None, overrides=(), parity=True) -> dict:
    """Every contract check (`check_pair`) of `objective` — a registry name, "module:Class" or a class — on `domain`
    with `encoder` (None: the tiny transformer)."""
    return check_pair(config(domain, objective, encoder, overrides), parity)


def check_encoder(encoder, *, domain="image", objective="simclr", overrides=(), parity=True) -> dict:
    """Every contract check (`check_pair`) of `encoder` — a registry name, "module:Class" or a class — on `domain`
    trained by `objective`, at the encoder's own default sizes (`overrides` may shrink them)."""
    return check_pair(config(domain, objective, encoder, overrides), parity)


def spec(x) -> str:
    """A registry name or "module:Class" as it is; a class as "module:Class"."""
    if isinstance(x, type):
        return f"{x.__module__}:{x.__qualname__}"
    if isinstance(x, str):
        return x
    raise UserError(f"expected a registry name, 'module:Class' or a class, got {type(x).__name__} {x!r}; pass the "
                    f"class itself, not an instance")


def config(domain="image", objective="simclr", encoder=None, overrides=()):
    """The tiny config of one pair as the command line composes it: TINY, the tiny transformer when no other encoder
    is named, then `overrides` (later win). A choice load_config refuses is a UserError with its line."""
    named = () if encoder is None else (f"encoder={spec(encoder)}",)
    tiny = TINY_ENCODER if encoder in (None, "transformer") else ()
    argv = [f"domain={spec(domain)}", f"objective={spec(objective)}", *named, *tiny, *TINY, *overrides]
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):  # load_config says a bad choice in one line and exits
            cfg = load_config(argv)
    except SystemExit:
        line = (said.getvalue().strip().splitlines() or ["refused"])[-1].removeprefix("multissl: error: ")
        raise UserError(f"{' '.join(argv[:len(named) + 2])}: {line}") from None
    sys.stderr.write(said.getvalue())
    return cfg


def check_pair(cfg, parity: bool = True) -> dict:
    """Everything multissl checks of its built-ins, on one composed config: (1) a training step with finite loss,
    logs and gradients reaching every parameter (`check_step`, in float32 and bf16); (2) views that depend only on
    (seed, position) (`check_draws`); (3) batched views and evaluation inputs equal to per-sample ones
    (`check_batched`); (4) a tiny full run whose export reloads to the trained encoder (`check_export`); (5) the
    first step on 2 processes equal to 1 process in float64 (`check_parity`, where gloo runs and `parity`)."""
    domain = build_domain(cfg)
    done = {"pair": pair(cfg), "step": check_step(cfg, domain), "draws": check_draws(domain),
            "batched": check_batched(domain)}
    with tempfile.TemporaryDirectory() as tmp:
        done["export"] = check_export(cfg, tiny_run(cfg, Path(tmp) / "run"))
    if parity:
        done["parity"] = check_parity(cfg, domain)
    return done
