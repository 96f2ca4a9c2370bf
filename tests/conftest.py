"""Shared fixtures: one intra-op thread, `tiny` runs and the mixed table (tests/tiny.py). Puts tests/ on sys.path
so tests import `tiny` and `toys` (the contract examples) by name."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny import TinyRuns, write_mixed_table  # noqa: E402


# The longest files first, longest first (what a worker runs last decides when the run ends: a long file started late
# leaves the other worker idle). -n auto --dist loadfile with --no-loadscope-reorder hands whole files to whichever
# worker is free, in this order (xdist's default order, by tests per file, would put the few long multi-process tests
# last). The distributed tier's one launch opens the run; the in-process contract tier runs beside it, so that two
# multi-process files do not start together on 2 cores (gloo's collectives spin while they wait).
FIRST = ("engine/test_distributed.py", "engine/test_contract.py", "engine/test_together.py", "test_benchmarks.py",
         "engine/test_guards.py", "test_plugin_install.py", "engine/test_compile.py", "engine/test_testing.py",
         "test_scale_bench.py", "engine/test_recovery.py", "test_extras.py", "engine/test_slurm.py",
         "domains/video/test_domain.py", "engine/test_sweep.py", "test_install.py", "engine/test_train.py")


def pytest_collection_modifyitems(items):
    """A test that trains through the `tiny` fixture runs the whole engine: the slow tier
    (`pytest -m "not slow and not distributed"` runs the fast ones). The FIRST files go first, in their order."""
    for item in items:
        if "tiny" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)

    def rank(item):
        path = Path(str(item.fspath)).as_posix()
        return next((i for i, f in enumerate(FIRST) if path.endswith(f)), len(FIRST))
    items.sort(key=rank)  # stable: every other file keeps its order


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors: intra-op threads only add overhead, and on a busy 2-core box oversubscription
    slows tiny models ~100x (scikit-learn's OpenMP pools too: its gradient-boosted trees in the tabular
    evaluation spin-wait for cores another job holds)."""
    from threadpoolctl import threadpool_limits
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny(tmp_path) -> TinyRuns:
    return TinyRuns(tmp_path)


@pytest.fixture(scope="session")
def mixed_table(tmp_path_factory) -> Path:
    return write_mixed_table(tmp_path_factory.mktemp("tables") / "customers.csv")
