"""multissl.losses: every public loss is its objective's function with a required `gather`; gather=False makes no
collective inside a process group (multissl.dist.one_process); and a user's own DDP loop with gather=True trains
exactly as one process on the whole batch (2 gloo processes, tests/engine/ddp_loop_worker.py)."""
import importlib.util
import inspect
from pathlib import Path

import pytest
import torch
from multissl.objectives import (
    barlow,
    byol,
    cpc,
    data2vec,
    dcl,
    dino,
    ibot_losses,
    lejepa,
    meanshift,
    moco_v3,
    msn,
    nnclr,
    rdm,
    scl,
    simclr,
    simsiam,
    spr,
    swav,
    vicreg,
    wmse,
)
from tiny import run_two_processes

from multissl import dist, losses
from multissl.errors import UserError

WORKER = Path(__file__).with_name("ddp_loop_worker.py")
spec = importlib.util.spec_from_file_location("ddp_loop_worker", WORKER)
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)


def leaf(*shape) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64).requires_grad_()


def pair(b: int = 6, d: int = 4) -> tuple:
    return leaf(b, d), leaf(b, d)


def masked_tokens() -> tuple:
    return leaf(6, 5, 4), leaf(6, 5, 4), torch.tensor([[0, 3], [1, -1], [4, 2], [-1, -1], [2, 0], [3, 1]])


# public name -> (the objective's function, its inputs)
CASES = {
    "nt_xent": (simclr.nt_xent_loss, pair),
    "dcl": (dcl.dcl_loss, pair),
    "moco_v3": (moco_v3.moco_v3_loss, pair),
    "nnclr": (nnclr.nnclr_loss, pair),
    "vicreg": (vicreg.vicreg_loss, pair),
    "barlow_twins": (barlow.barlow_loss, pair),
    "byol": (byol.byol_loss, pair),
    "simsiam": (simsiam.simsiam_loss, pair),
    "rdm": (rdm.rdm_loss, pair),
    "dino": (dino.dino_loss, lambda: ([leaf(6, 5) for _ in range(3)], [leaf(6, 5) for _ in range(2)], leaf(5), 0.04)),
    "swav": (swav.swav_loss, lambda: ([leaf(6, 5) for _ in range(3)], [leaf(6, 5).softmax(1) for _ in range(2)])),
    "sinkhorn": (swav.sinkhorn, lambda: (torch.randn(6, 5, dtype=torch.float64),)),
    "spr": (spr.spr_loss, lambda: (leaf(6, 3, 4), leaf(6, 3, 4), torch.rand(6, 3) > 0.4)),
    "masked_regression": (data2vec.regression_loss, masked_tokens),
    "scl": (scl.scl_loss, pair),
    "wmse": (wmse.wmse_loss, pair),
    "meanshift": (meanshift.meanshift_loss, lambda: (leaf(6, 4), leaf(6, 3, 4))),
    "lejepa": (lejepa.lejepa_loss, lambda: (leaf(6, 3, 4), 0)),
    "sigreg": (lejepa.sigreg, lambda: (leaf(6, 4), 0)),
    "msn": (msn.msn_loss, lambda: ([leaf(6, 5), leaf(6, 5)], leaf(6, 5))),
    "ibot_patch": (ibot_losses.patch_loss, lambda: ([leaf(6, 2, 5)], [leaf(6, 2, 5).softmax(-1)],
                                                    [masked_tokens()[2]])),
    "koleo": (ibot_losses.koleo_loss, lambda: (leaf(6, 4),)),
    "cpc": (cpc.cpc_loss, lambda: (leaf(6, 4, 2, 3), leaf(6, 4, 3), torch.rand(6, 4) > 0.3)),
}


def leaves(args) -> list:
    flat = [a for x in args for a in (x if isinstance(x, list) else [x])]
    return [a for a in flat if isinstance(a, torch.Tensor) and a.requires_grad]


def flat(out) -> list[torch.Tensor]:
    """A loss's output as tensors: the loss, then (msn, cpc) its extra figures."""
    if not isinstance(out, tuple):
        return [out]
    extra = out[1].values() if isinstance(out[1], dict) else [out[1]]
    return [out[0], *extra]


def evaluate(fn, make, **kw) -> tuple:
    """fn on make()'s inputs (seeded) -> (its output's tensors, the gradients of the loss's sum w.r.t. the input
    leaves)."""
    torch.manual_seed(0)
    args = make()
    out = flat(fn(*args, **kw))
    grads = torch.autograd.grad(out[0].sum(), leaves(args), allow_unused=True) if out[0].requires_grad else ()
    return [o.detach() for o in out], grads


def same(grads, want) -> bool:
    """Equal tensors (None where an input gets no gradient), bitwise."""
    return all(a is b is None or torch.equal(a, b) for a, b in zip(grads, want, strict=True))


def test_every_loss_has_a_case():
    assert sorted(losses.__all__) == sorted(CASES)


@pytest.mark.parametrize("name", CASES)
def test_each_name_is_its_objectives_function_on_one_process(name):
    original, make = CASES[name]
    public = getattr(losses, name)
    assert public.__wrapped__ is original and public.__name__ == name and name in losses.__doc__
    want, want_grads = evaluate(original, make)
    for gather in (False, True):
        got, grads = evaluate(public, make, gather=gather)
        assert same(got, want) and same(grads, want_grads)


@pytest.mark.parametrize("name", CASES)
def test_gather_is_keyword_only_without_default_and_the_rest_is_the_objectives(name):
    """One source of defaults: the objective's own parameters, their defaults the same objects."""
    original, make = CASES[name]
    public = getattr(losses, name)
    params = inspect.signature(public).parameters
    assert params["gather"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["gather"].default is inspect.Parameter.empty
    assert {k: v for k, v in params.items() if k != "gather"} == dict(inspect.signature(original).parameters)
    with pytest.raises(TypeError, match="gather"):
        public(*make())
    with pytest.raises(UserError, match="gather must be True .* or False"):
        public(*make(), gather="yes")


class Collective(Exception):
    pass


@pytest.fixture
def two_processes(monkeypatch):
    """torch.distributed as rank 0 of an initialized group of 2, whose every collective raises Collective."""
    def collective(*args, **kwargs):
        raise Collective
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, **k: 0)
    for name in ("all_gather", "all_reduce", "broadcast", "all_gather_into_tensor", "reduce_scatter_tensor"):
        monkeypatch.setattr(torch.distributed, name, collective)


@pytest.mark.parametrize("name", CASES)
def test_gather_false_makes_no_collective_in_a_process_group(name, two_processes):
    """This process's rows alone, forward and backward, as on one process; gather=True would gather."""
    original, make = CASES[name]
    with dist.one_process():
        want, want_grads = evaluate(original, make)
    got, grads = evaluate(getattr(losses, name), make, gather=False)
    assert same(got, want) and same(grads, want_grads)
    with pytest.raises(Collective):
        evaluate(getattr(losses, name), make, gather=True)


def test_one_process_acts_as_one_process_until_it_ends(two_processes):
    x = torch.randn(4, 3)
    assert (dist.world_size(), dist.rank()) == (2, 0)
    with dist.one_process():
        assert (dist.is_dist(), dist.world_size(), dist.rank(), dist.local_slice(8)) == (False, 1, 0, slice(0, 8))
        assert dist.gather(x) is x and torch.equal(dist.all_gather(x), x) and torch.equal(dist.all_reduce(x), x)
        assert dist.global_mean(torch.tensor(6.0), torch.tensor(3.0)) == 2.0
    assert dist.world_size() == 2
    with pytest.raises(Collective):
        dist.all_reduce(x)


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> list[dict]:
    """The 2 DDP processes' results."""
    return run_two_processes(WORKER, tmp_path_factory.mktemp("ddp_loop"))


def close(a: dict, b: dict, tol: float = 1e-10) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=tol) for k in a)


@pytest.mark.distributed
@pytest.mark.parametrize("name", worker.LOSSES)
def test_ddp_loop_with_gather_true_trains_as_one_process_on_the_whole_batch(launched, name):
    """DDP's gradient average, applied to the loss as it is (no scaling by the number of processes), gives the
    whole batch's gradient: the gather's backward already sums every process's share. Every step's loss is the
    whole batch's, on both processes."""
    one = worker.train(name, [slice(None)], gather=True)
    for rank in (0, 1):
        two = launched[rank][f"{name}/gather"]
        assert close(two["params"], one["params"]), (rank, name)
        assert two["losses"] == pytest.approx(one["losses"], rel=0, abs=1e-10)


@pytest.mark.distributed
@pytest.mark.parametrize("name", worker.LOSSES)
def test_ddp_loop_with_gather_false_trains_on_the_mean_of_per_process_losses(launched, name):
    """gather=False: each process has the loss of its own half, and DDP trains on their mean: another loss than
    the whole batch's wherever the loss compares samples; the same for a per-sample loss (byol)."""
    halves = worker.train(name, [worker.half(0), worker.half(1)], gather=False)
    whole = worker.train(name, [slice(None)], gather=True)
    for rank in (0, 1):
        two = launched[rank][f"{name}/local"]
        assert close(two["params"], halves["params"]), (rank, name)
        own = worker.train(name, [worker.half(rank)], gather=False)
        assert two["losses"][0] == pytest.approx(own["losses"][0], rel=0, abs=1e-10)
    assert close(halves["params"], whole["params"]) == (name == "byol")


@pytest.mark.distributed
def test_gather_true_spans_unequal_counts_across_processes(launched):
    """SPR's and CPC's valid steps and the masked tokens are held unevenly: the mean is over every process's items,
    not the mean of the processes' means."""
    one = worker.uneven(slice(None), gather=True)
    halves = [worker.uneven(worker.half(r), gather=False) for r in (0, 1)]
    for rank in (0, 1):
        assert launched[rank]["uneven"] == pytest.approx(one, rel=0, abs=1e-12)
    assert all(abs(sum(h[k] for h in halves) / 2 - one[k]) > 1e-3 for k in one)  # the mean of means is not it
