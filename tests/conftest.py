"""Shared fixtures: one intra-op thread, `tiny` runs and the mixed table (tests/tiny.py). Puts tests/ on sys.path
so tests import `tiny` and `toys` (the contract examples) by name."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny import TinyRuns, write_mixed_table  # noqa: E402


# The longest file, started first: with -n auto --dist loadfile a worker takes whole files in collection order, and
# the distributed tier's one launch started last would leave the other worker idle at the end. Only it: the other
# multi-process files beside it would oversubscribe the cores (gloo's collectives spin while they wait).
FIRST = ("engine/test_distributed.py",)


def pytest_collection_modifyitems(items):
    """A test that trains through the `tiny` fixture runs the whole engine: the slow tier
    (`pytest -m "not slow and not distributed"` runs the fast ones). The FIRST files go first."""
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
