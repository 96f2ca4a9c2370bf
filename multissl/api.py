"""multissl as a library: `fit` trains one run in this process, as the command line does, and returns it.

    run = multissl.fit(domain="tabular", objective="vicreg", data=frame, trainer={"max_steps": 200})
    run.metrics["knn_acc"], run.encoder.embed(frame.head(5))

It never exits the interpreter (a bad choice or file raises multissl.errors.UserError), installs no signal handler
unless asked, and may be called again in the same process."""
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from multissl.cli import compose_config
from multissl.registry import register
from multissl.runlog import read_rows


@dataclass
class Run:
    """A finished run: its folder (config.yaml, metrics.jsonl, checkpoints/, encoder/)."""
    path: Path

    @functools.cached_property
    def rows(self) -> list[dict]:
        """Every row of metrics.jsonl (training steps and evaluations)."""
        return read_rows(self.path / "metrics.jsonl")

    @property
    def metrics(self) -> dict:
        """The final evaluation: held-out metrics, RankMe, and untrained/<metric> where the baseline ran."""
        return self.rows[-1] if self.rows else {}

    @functools.cached_property
    def encoder(self):
        """The exported encoder (multissl.load_encoder): `embed(raw batch) -> [b d]`."""
        from multissl.export import load_encoder
        return load_encoder(self.path)


def option(group: str, value) -> str:
    """A registry name, an entry point, `module:Class`, or a class (registered, so its export opens again here)."""
    if isinstance(value, type):
        register(value)
        return f"{value.__module__}:{value.__qualname__}"
    return str(value)


def literal(value) -> str:
    """A Python value as Hydra's override grammar reads it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return f"[{','.join(literal(v) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{literal(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value)).replace("\\\\", "\\")  # a quoted string: any character is taken as it is


def overrides(values: dict) -> list[str]:
    """{"trainer": {"max_steps": 5}, "domain.patch_size": 4} -> ["trainer.max_steps=5", "domain.patch_size=4"]."""
    out = []
    for key, value in values.items():
        if isinstance(value, dict) and "." not in key and key in ("data", "trainer", "optim", "ema", "run", "domain",
                                                                   "objective", "encoder"):
            out += overrides({f"{key}.{k}": v for k, v in value.items()})
        else:
            out.append(f"{key}={literal(value)}")
    return out


def fit(domain="image", objective=None, encoder=None, data=None, *, signals: bool = False, **settings) -> Run:
    """Train one run and return it. domain/objective/encoder: a registry name, an entry point, `module:Class` or a
    class (None: the domain's choice for its data, else the config's default, as on the command line). data: a path
    (data.path), None (the domain's embedded default), or in-memory data the domain reads (an array or tensor of
    samples, `(samples, labels)`, a DataFrame, a list of strings, a torch Dataset). settings: any key of the command
    line, dotted (`**{"domain.patch_size": 4}`) or as a section's dict (`trainer={"max_steps": 200}`). signals:
    SIGTERM, SIGUSR1 and SIGINT end the run with a checkpoint and raise multissl.stop.Stopped (default: Python's own
    handling)."""
    from multissl.train import run
    argv = [f"domain={option('domain', domain)}"]
    argv += [f"{g}={option(g, value)}" for g, value in (("objective", objective), ("encoder", encoder))
             if value is not None]
    in_memory = data is not None and not isinstance(data, (str, Path))
    if data is not None and not in_memory:
        argv.append(f"data.path={literal(str(data))}")
    cfg = compose_config([*argv, *overrides(settings)])
    return Run(Path(run(cfg, data=data if in_memory else None, signals=signals)))
