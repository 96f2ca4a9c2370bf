"""Labelled sets for the per-domain suites (benchmarks/suites.py): each domain module (text.py, image.py, video.py,
audio.py) holds SETS, name -> Set. A set is generated offline from installed packages (or is the domain's embedded
default), written once under the folder it is given (a `.done` marker says it is complete), with a fixed held-out
split that pretraining never reads (train/ and test/ folders, or an .npz's test arrays). It carries no recipe: the
runs point the domain at the data and nothing else, so the default recipe is what is measured."""
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Set:
    about: str  # one line: what the data is, its size and what the label is
    prepare: Callable[[Path, float], list[str]]  # (folder, scale) -> the `multissl.train` overrides that read it
    metric: str = "knn_acc"  # the held-out score the suite compares (a key of the run's metrics)
    same_run_as: str | None = None  # another set of the module whose runs this one reads (another label, same data)


def written(root: Path, write: Callable[[Path], None]) -> Path:
    """root, filled once by write(root) (an interrupted write is redone: the marker comes last)."""
    if not (root / ".done").exists():
        root.mkdir(parents=True, exist_ok=True)
        write(root)
        (root / ".done").touch()
    return root


def sized(n: int, scale: float, least: int = 8) -> int:
    """n samples at `scale` (tests build tiny sets), never fewer than `least`."""
    return max(least, round(n * scale))
