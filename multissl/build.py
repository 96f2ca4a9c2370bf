"""Building a run from its config: the domain with its data loaded — the same on every process — then the encoder and
the objective. Incompatible choices are refused from the classes' declarations before any data is loaded.

What a domain derives from its data (a tokenizer, normalisation statistics, an automatic size or patch: its
`state()`) is derived once, by the main process, and every other process builds its domain from that state: two
trainings of a tokenizer on the same texts need not give the same ids, and on nodes without a shared filesystem
every process would otherwise derive its own. Default data a domain generates (spoken words, a replay buffer) is
generated once per machine, by its first process, into that machine's cache. Then every process checks that it
loaded the data the main process loaded."""
import contextlib
import hashlib
import io
import json
import os

import torch
from accelerate.utils import broadcast_object_list, gather_object
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from multissl import dist, stop
from multissl.contracts import Domain, Encoder, check, compatible
from multissl.errors import UserError
from multissl.registry import resolve as plugin_or_target


def make(node, **kwargs):
    """The class of a config the user composed (the command line, Python) called with the node's keys and kwargs —
    objects the engine passes (the domain, in-memory data) reach it as they are, never through the config — and a
    UserError raised inside the class (a bad option, an encoder that cannot read the data) passed on as it is. Files
    written by others go through multissl.registry instead."""
    try:
        factory = instantiate(node, _partial_=True, _convert_="all")
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        raise
    return factory(**kwargs)


def refuse_incompatible(cfg):
    """The one compatibility rule (multissl.contracts.compatible), from the classes' declarations, before any data."""
    classes = [plugin_or_target(cfg[g]._target_) for g in ("domain", "objective", "encoder")]
    why = compatible(*classes, names=dict(cfg.meta))
    if why:
        raise UserError(why)


def build_domain(cfg, state: dict | None = None, data=None):
    """The domain with its data loaded, identical on every process (see the module's docstring). `state`: a resumed
    run's saved domain state, which every process then uses instead of deriving one; `data`: in-memory data (an
    array, a DataFrame, a list of strings …) the domain reads as its data.path."""
    refuse_incompatible(cfg)
    section = OmegaConf.to_container(cfg.data) | ({} if data is None else {"path": data})

    def load(s):
        domain = make(cfg.domain, data=section, **({} if s is None else {"state": s}))
        check(domain, Domain, "domain")
        train = domain.dataset("train")
        if train is None or len(train) == 0:
            raise UserError("the training set is empty; check data.path (it needs at least one sample)")
        return domain

    if dist.world_size() == 1:
        return load(state)
    first_here = int(os.environ.get("LOCAL_RANK", 0)) == 0
    release, wait = stop.main_first()  # the others wait, without the process group's timeout, while the main
    domain = load(state) if dist.rank() == 0 else None  # process prepares the data (a tokenizer on a big corpus)
    if domain is not None:
        release()
    else:
        wait()
    box = [None if domain is None else domain.state()]
    broadcast_object_list(box)
    with contextlib.redirect_stderr(io.StringIO()):  # what the data says, the main process has said
        if domain is None and first_here:  # another machine's first process: its default data into its cache
            domain = load(box[0])
        torch.distributed.barrier()
        if domain is None:  # then the machine's other processes, from that cache
            domain = load(box[0])
    same_data(domain)
    return domain


def fingerprint(domain) -> dict:
    """What every process must agree on: the domain's state (exactly), the split sizes, and a summary of three
    un-augmented samples (their size and float64 sums, compared with a tolerance: machines may round differently)."""
    train, test = domain.dataset("train"), domain.dataset("test")
    picks = sorted({0, len(train) // 2, len(train) - 1})
    sums = []
    for i in picks:
        x = domain.eval_input(train[i]["x"])
        x = x[0] if isinstance(x, tuple) else x
        x = torch.as_tensor(x).double()
        sums.append([float(x.numel()), float(x.nan_to_num().sum()), float(x.nan_to_num().square().sum())])
    state = json.dumps(domain.state(), sort_keys=True, default=str)
    return {"state": hashlib.sha256(state.encode()).hexdigest(), "sizes": [len(train), len(test) if test else 0],
            "samples": sums}


def difference(p: dict, main: dict) -> str | None:
    """How one process's fingerprint differs from the main process's, or None."""
    if p["state"] != main["state"]:
        return "a different domain state (it derived its own instead of the main process's)"
    if p["sizes"] != main["sizes"]:
        return f"{p['sizes']} training/held-out samples against the main process's {main['sizes']}"
    if not torch.allclose(torch.tensor(p["samples"]), torch.tensor(main["samples"]), rtol=1e-4, atol=1e-6):
        return "other samples"
    return None


def same_data(domain):
    """Every process loaded what the main process loaded; else one line naming the first process that did not."""
    prints = gather_object([fingerprint(domain)])
    for r, p in enumerate(prints[1:], 1):
        what = difference(p, prints[0])
        if what:
            raise UserError(f"process {r} loaded other data than process 0: {what}; every process must read the "
                            f"same data.path — on several machines, the same files at the same path")


def build_models(cfg, domain):
    """Encoder and objective (heads, teacher, state) for a domain whose data is loaded."""
    encoder = make(cfg.encoder, domain=domain)
    check(encoder, Encoder, "encoder")
    return encoder, make(cfg.objective, encoder=encoder, domain=domain)


def build(cfg):
    """Domain (data loaded), its splits, encoder, objective — all from the config registry."""
    domain = build_domain(cfg)
    return domain, domain.dataset("train"), domain.dataset("test"), *build_models(cfg, domain)
