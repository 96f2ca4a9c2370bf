"""trainer.compile=true: the step's networks (the encoder, the projector, the predictor, the EMA teacher's nets) run
compiled, train as eager does (inductor, on simclr: each network inductor compiles costs seconds of C++), a
variable-length domain compiles each network once whatever the lengths, and the checkpoint and the export are an eager
run's."""
import random

import pytest
import torch
from threadpoolctl import threadpool_limits

import multissl
import multissl.train as engine
from multissl.checkpoint import latest_state
from multissl.testing import TINY_ENCODER

SETTINGS = {**{k: int(v) for k, v in (a.split("=", 1) for a in TINY_ENCODER)}, "data.num_workers": 0,
            "trainer.log_every": 1, "trainer.eval_every": 0, "trainer.eval_samples": 64, "trainer.baseline": False,
            "trainer.precision": "no"}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Compiled code is cached per function across runs of a process: each test starts from none."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def spy_compile(monkeypatch, backend=None) -> list:
    """torch.compile records what it is given (the bound forwards compile_model hands it), optionally with another
    backend."""
    real, given = torch.compile, []

    def spy(fn, **kw):
        given.append(fn)
        return real(fn, **kw) if backend is None else real(fn, backend=backend, **kw)
    monkeypatch.setattr(torch, "compile", spy)
    return given


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 3 steps of simclr on images, eager and compiled (inductor), and what torch.compile was given."""
    threads, runs, root = torch.get_num_threads(), {}, tmp_path_factory.mktemp("compile")
    torch.set_num_threads(1)  # as conftest's per-test fixture does, for this module-wide one
    try:
        with pytest.MonkeyPatch.context() as mp, threadpool_limits(limits=1):
            given = spy_compile(mp)
            for compiled in (False, True):
                torch._dynamo.reset()
                runs[compiled] = multissl.fit("image", "simclr", **SETTINGS, **{
                    "data.batch_size": 16, "trainer.max_steps": 3, "trainer.compile": compiled,
                    "run.dir": str(root / str(compiled))})
    finally:
        torch.set_num_threads(threads)
    return runs, given


@pytest.mark.slow  # inductor's C++ kernels for every network, training and evaluation
def test_a_compiled_run_trains_as_the_eager_one(runs):
    runs, given = runs
    assert sorted(type(fn.__self__).__name__ for fn in given) == ["Encoder", "Sequential"]  # the encoder, the projector
    losses = {c: [r["loss"] for r in run.rows if "loss" in r] for c, run in runs.items()}
    assert len(losses[True]) == 3
    torch.testing.assert_close(losses[True], losses[False], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_a_compiled_run_checkpoints_and_exports_as_the_eager_one(runs):
    runs, _ = runs
    states = {c: latest_state(run.path)["model"] for c, run in runs.items()}
    assert list(states[True]) == list(states[False])  # no wrapper's prefix (_orig_mod.)
    exported = {c: run.encoder.state_dict() for c, run in runs.items()}  # multissl.load_encoder opens it
    assert list(exported[True]) == list(exported[False])
    for key, value in exported[True].items():
        assert torch.equal(value, states[True][key])  # the trained weights themselves
    # AdamW moves a weight whose gradient is zero but for float noise (the attention's key bias, a norm's bias
    # before BatchNorm) by up to lr either way each step: the eager and compiled kernels' noise differs
    bound = 2 * sum(r["lr"] for r in runs[True].rows if "loss" in r)
    for key, value in exported[False].items():
        torch.testing.assert_close(exported[True][key], value, atol=bound, rtol=0)


def test_variable_length_text_compiles_each_network_once(tmp_path, monkeypatch):
    words = "the cat dog bird fish frog mouse horse sheep runs jumps sleeps eats in on under a big small red".split()
    rng = random.Random(0)
    corpus = tmp_path / "lines.txt"
    corpus.write_text("\n".join(" ".join(rng.choices(words, k=rng.randint(2, 30))) for _ in range(200)))
    graphs, compiled_before, lengths = [], {}, set()

    def counting(gm, example_inputs):  # runs the captured graph as it is: counting is what matters here
        graphs.append(any(isinstance(e, torch.SymInt) for e in example_inputs))
        return gm.forward
    given = spy_compile(monkeypatch, backend=counting)
    step_values, make_views = engine.step_values, engine.make_views

    def at_step(step, *args, **kwargs):
        compiled_before[step] = len(graphs)
        return step_values(step, *args, **kwargs)

    def views(domain, batch):
        out = make_views(domain, batch)
        lengths.update(v.shape[1] for v in out["views"])
        return out
    monkeypatch.setattr(engine, "step_values", at_step)
    monkeypatch.setattr(engine, "make_views", views)
    multissl.fit("text", "byol", data=corpus, **SETTINGS, **{
        "data.batch_size": 8, "trainer.max_steps": 7, "trainer.compile": True, "domain.vocab_size": 120,
        "domain.cache_dir": str(tmp_path / "cache"), "run.dir": str(tmp_path / "run")})
    # the student encoder and its teacher copy, the projector, the predictor and the teacher's projector
    assert sorted(type(fn.__self__).__name__ for fn in given) == ["Encoder", "Encoder", "Sequential", "Sequential",
                                                                  "Sequential"]
    assert len(lengths) >= 4  # the batches' sequence lengths differ from step to step
    after_one = compiled_before[1]
    assert after_one > 0 and graphs[:after_one] == [True] * after_one  # symbolic shapes from the first compile
    assert [compiled_before[s] for s in range(1, 7)] == [after_one] * 6  # no step after the first compiles
    assert len(graphs) == after_one  # nor the evaluation at the end (eval mode runs the eager forward)
