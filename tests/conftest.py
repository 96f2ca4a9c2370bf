"""Shared fixtures: one intra-op thread, and `tiny` runs (a tiny model config and a metrics.jsonl reader)."""
import json
from pathlib import Path

import pytest
import torch

from multissl.cli import load_config
from multissl.train import run


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors: intra-op threads only add overhead, and on a busy 2-core box oversubscription
    slows tiny models ~100x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# Small enough that one training step takes well under a second on 2 busy cores.
TINY_ENCODER = ("encoder.dim=16", "encoder.depth=1", "encoder.heads=2")  # transformer keys only
TINY = ("data.batch_size=32", "trainer.log_every=1", "trainer.eval_every=0")


class TinyRuns:
    def __init__(self, root: Path):
        self.root = root

    def config(self, *overrides, name: str = "run", tiny_encoder: bool = True):
        """TINY(_ENCODER), then run.dir=<tmp>/<name>, then `overrides` (later overrides win)."""
        enc = TINY_ENCODER if tiny_encoder else ()
        return load_config([*enc, *TINY, f"run.dir={self.root / name}", *overrides])

    def run(self, *overrides, name: str = "run", tiny_encoder: bool = True) -> Path:
        return run(self.config(*overrides, name=name, tiny_encoder=tiny_encoder))

    @staticmethod
    def metrics(folder: Path) -> list[dict]:
        return [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines() if line]


@pytest.fixture
def tiny(tmp_path) -> TinyRuns:
    return TinyRuns(tmp_path)
