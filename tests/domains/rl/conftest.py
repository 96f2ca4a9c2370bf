"""Buffers and domains for the rl tests."""
import numpy as np
import pytest

from multissl.domains.rl import RLDomain


def helper(fn):
    """fn as a session fixture of its own name: the tests ask for it by parameter and call it (test files
    import nothing from each other under pytest's importlib mode)."""
    return pytest.fixture(scope="session", name=fn.__name__)(lambda: fn)


@helper
def write_buffer(path, obs, ends=None, truncated=None, **extra):
    """A buffer in the documented format; `ends` = indices of terminated steps, `truncated` = of truncated ones."""
    n = len(obs)
    term, trunc = np.zeros(n, bool), np.zeros(n, bool)
    term[list([] if ends is None else ends)] = True
    trunc[list([] if truncated is None else truncated)] = True
    arrays = {"obs": obs, "action": np.zeros(n, np.int64), "reward": np.ones(n, np.float32), "terminated": term,
              "truncated": trunc, **extra}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@helper
def domain_on(path, **kw):
    d = RLDomain(data={"path": str(path)}, **kw)
    d.dataset("train")
    return d


@helper
def frames(n, shape, seed=0):
    """Random uint8 observations [n *shape]."""
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
