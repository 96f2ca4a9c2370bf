"""The checks of one composed config or one built domain: a training step (1), views that depend only on (seed,
position) (2), batched views and evaluation inputs equal to per-sample ones (3), an export that reloads to the trained
encoder (4). Each raises AssertionError naming what failed and returns a small dict of what it checked."""
import json
import math
from pathlib import Path

import torch
from accelerate.utils import set_seed
from omegaconf import open_dict

from multissl import checkpoint
from multissl.build import build_domain, build_models, make
from multissl.contracts import Domain, Objective, optional
from multissl.data import Collate, Views, collate_of, make_views, objective_loader, sample_views
from multissl.export import load_encoder
from multissl.precision import Precision
from multissl.registry import register, resolve
from multissl.schedules import step_values
from multissl.train import SSLModel, run


def pair(cfg) -> str:
    """How failure messages name the pair under test."""
    return " ".join(f"{g}={cfg.meta[g]}" for g in ("domain", "objective", "encoder"))


# ---- (1) one training step ---------------------------------------------------------------------------------------
def first_step(cfg, domain, seed: int = 0, precision: str = "no"):
    """A fresh encoder + objective (seeded), one batch of the training loader, forward (under the engine's autocast
    for `precision`) and backward as the engine does; returns (model, loss, logs, sched)."""
    set_seed(seed)
    encoder, objective = build_models(cfg, domain)
    model = SSLModel(encoder, objective).train()
    loader = objective_loader(domain.dataset("train"), domain, objective, seed, cfg.data.batch_size, 0, 1, 0, 1)
    batch = make_views(domain, next(iter(loader)))
    batch.pop("skipped")
    sched = step_values(0, 10, cfg.optim, cfg.ema, 1e-3)
    with Precision(precision, "cpu").autocast():
        loss, logs = model(batch, sched)
    loss.backward()
    return model, loss, logs, sched


def assert_every_parameter_learns(model, where: str = "model"):
    """timm's registry check: every trainable parameter gets a finite gradient that is not all zero (a teacher's
    parameters do not require one)."""
    trainable = [(k, p) for k, p in model.named_parameters() if p.requires_grad and p.numel()]
    assert trainable, f"{where}: no trainable parameter"
    dead = [k for k, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"{where}: no gradient reaches {dead}"
    bad = [k for k, p in trainable if not torch.isfinite(p.grad).all()]
    assert not bad, f"{where}: non-finite gradients in {bad}"


def finite_scalars(logs: dict, where: str) -> dict:
    """The logged scalars (all but "rep"), each finite."""
    scalars = {k: float(v) for k, v in logs.items() if k != "rep"}
    bad = {k: v for k, v in scalars.items() if not math.isfinite(v)}
    assert not bad, f"{where}: logged scalars are not finite: {bad}"
    return scalars


def check_step(cfg, domain) -> dict:
    """One training step: a finite scalar loss, logs["rep"] the detached view-0 representation [b dim], finite logged
    scalars, a finite non-zero gradient for every trainable parameter of the encoder and the heads, and after_step
    runs; then the same step under bf16 autocast: a finite loss, logs and gradients."""
    where, b = pair(cfg), cfg.data.batch_size
    model, loss, logs, sched = first_step(cfg, domain)
    assert loss.ndim == 0 and torch.isfinite(loss), f"{where}: the loss is {loss.detach()}, not a finite scalar"
    rep, dim = logs.get("rep"), model.encoder.dim
    assert torch.is_tensor(rep) and rep.shape == (b, dim) and not rep.requires_grad, (
        f"{where}: logs['rep'] must be view 0's detached representation [{b} {dim}], got "
        f"{rep.shape if torch.is_tensor(rep) else rep!r}")
    scalars = finite_scalars(logs, where)
    assert_every_parameter_learns(model, where)
    optional(model.objective, Objective, "after_step")(model.encoder, sched)
    model, loss16, logs, _ = first_step(cfg, domain, precision="bf16")  # mixed precision, as the engine runs it
    assert torch.isfinite(loss16), f"{where}: under bf16 autocast the loss is {loss16.detach()}"
    finite_scalars(logs, f"{where} under bf16 autocast")
    bad = [k for k, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{where}: under bf16 autocast, non-finite gradients in {bad}"
    assert any(p.grad is not None for p in model.parameters()), f"{where}: under bf16 autocast no gradient at all"
    return {"loss": loss.item(), "logged": sorted(scalars), "parameters": sum(p.requires_grad for p in
                                                                             model.parameters())}


# ---- (2) and (3) views -------------------------------------------------------------------------------------------
def item_views(domain, item: dict) -> list:
    """The views of one Views item: made per sample, or from its draws by the domain's batched apply."""
    return item["views"] if "drawn" not in item else sample_views(domain, item["drawn"])


def named(domain) -> str:
    """How failure messages name a built domain."""
    return f"{type(domain).__qualname__} (domain {domain.name})"


def check_draws(domain, seed: int = 7) -> dict:
    """Exact resume and process-count invariance rest on this: a fresh Views, asked for draw k in any order after any
    other draws, returns the same views (bit-identical, NaN included), mask and label; another seed other views."""
    base = domain.dataset("train")
    a, b = Views(base, domain, seed, 2), Views(base, domain, seed, 2)
    ks = [0, min(5, len(base) - 1), len(base) + 3, min(2, len(base) - 1)]  # len + 3: the second epoch
    first = [a[k] for k in ks]
    again = [b[k] for k in reversed(ks)][::-1]
    for k, x, y in zip(ks, first, again):
        for j, (u, v) in enumerate(zip(item_views(domain, x), item_views(domain, y), strict=True)):
            torch.testing.assert_close(u, v, rtol=0, atol=0, equal_nan=True, msg=lambda m: (
                f"{named(domain)}: draw {k}'s view {j} changes when drawn in another order (views must depend "
                f"on (seed, position) only: draw every random number from the rng given): {m}"))
        for key in ("keep", "masked"):
            assert torch.equal(x[key], y[key]), f"{named(domain)}: draw {k}'s mask ({key}) changes when drawn " \
                                                f"in another order; draw it from the rng given"
        assert x["y"] == y["y"], f"{named(domain)}: draw {k}'s label changes when drawn in another order"
    other = Views(base, domain, seed + 1, 2)[0]
    assert not torch.equal(item_views(domain, first[0])[0], item_views(domain, other)[0]), (
        f"{named(domain)}: seeds {seed} and {seed + 1} give the same views of draw 0; draw from the rng given")
    return {"draws": len(ks)}


def check_batched(domain, n: int = 6) -> dict:
    """What runs on the device is what ran per sample: a domain with `draw` makes each sample's views alike in a
    batch (its `apply` on the batch) and alone (a batch of one), and `eval_raw` + batched `preprocess` give the
    per-sample `eval_input` (both to 1e-5)."""
    base = domain.dataset("train")
    n = min(n, len(base))
    items = [Views(base, domain, 1, 2)[k] for k in range(n)]
    done = {"batched_views": "drawn" in items[0], "eval_raw": False}
    if done["batched_views"]:
        views = make_views(domain, Collate(domain)(items))["views"]
        for i, it in enumerate(items):
            for j, (v, alone) in enumerate(zip(views, item_views(domain, it), strict=True)):
                torch.testing.assert_close(v[i], alone, atol=1e-5, rtol=0, equal_nan=True, msg=lambda m: (
                    f"{named(domain)}: sample {i}'s view {j} in a batch of {n} differs from its view alone "
                    f"(apply must treat each sample on its own): {m}"))
    raw = optional(domain, Domain, "eval_raw")
    if raw is not None:
        done["eval_raw"] = True
        xs = [base[i]["x"] for i in range(n)]
        got = domain.preprocess(torch.stack([raw(x) for x in xs]))
        got, want = (g if isinstance(g, tuple) else (g, None) for g in (got, collate_of(domain)([
            domain.eval_input(x) for x in xs])))
        for part, g, w in zip(("input", "padding"), got, want):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=0, msg=lambda m: (
                f"{named(domain)}: preprocess of a batch of eval_raw samples differs from their eval_input "
                f"({part}): {m}"))
    return done


# ---- (4) export ----------------------------------------------------------------------------------------------------
def tiny_run(cfg, folder: Path, steps: int = 2) -> Path:
    """multissl.train.run of `cfg` for `steps` steps into `folder` (train, checkpoint, export, evaluate)."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.run.dir, cfg.trainer.max_steps = str(folder), steps
    return run(cfg)


def pooled(encoder, x, pad=None) -> torch.Tensor:
    with torch.no_grad():
        return (encoder(x) if pad is None else encoder(x, pad=pad))[1]


def check_export(cfg, folder: Path, domain=None, n: int = 6) -> dict:
    """A run folder's export reloads to what it trained: `load_encoder(folder)` rebuilds the domain from its saved
    state (which it gives back unchanged), and on the first `n` training samples its `embed` of their `eval_raw`
    batch equals the checkpoint's encoder on `preprocess` of that batch (a domain without `eval_raw`: the reloaded
    encoder equals it on the batched `eval_input`s). `domain`: the run's domain with its data (None: built from the
    checkpoint's state). The classes of cfg's domain and encoder are registered (multissl.register) to be opened."""
    saved = checkpoint.latest_state(folder)
    assert saved is not None, f"{pair(cfg)}: the run wrote no checkpoint in {folder}"
    for group in ("domain", "encoder"):
        register(resolve(cfg[group]._target_))
    domain = domain or build_domain(cfg, state=saved["domain"])
    trained = make(cfg.encoder, domain=domain)
    trained.load_state_dict({k[len("encoder."):]: v for k, v in saved["model"].items() if k.startswith("encoder.")})
    trained.eval()
    exported = load_encoder(folder)
    where = f"{pair(cfg)}: the export in {folder}"
    state = json.dumps(exported.domain.state(), sort_keys=True, default=str)
    assert state == json.dumps(saved["domain"], sort_keys=True, default=str), (
        f"{where}: the domain rebuilt from its state (state=) gives another state(); the constructor must take "
        f"state() back unchanged")
    train = domain.dataset("train")
    n = min(n, len(train))
    xs = [train[i]["x"] for i in range(n)]
    raw = optional(domain, Domain, "eval_raw")
    if raw is not None:
        batch = torch.stack([raw(x) for x in xs])
        got, x = exported.embed(batch), domain.preprocess(batch)
        want = pooled(trained, *(x if isinstance(x, tuple) else (x,)))
    else:
        x, pad = collate_of(domain)([domain.eval_input(x) for x in xs])
        got, want = pooled(exported.encoder, x, pad), pooled(trained, x, pad)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=lambda m: (
        f"{where} does not reproduce the trained encoder ({'embed of eval_raw' if raw else 'on eval_input'}): {m}"))
    return {"embed": raw is not None, "samples": n}
