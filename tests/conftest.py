import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors: intra-op threads only add overhead, and on a busy 2-core box oversubscription
    slows tiny models ~100x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
