"""The run's metrics: one JSON object per row in metrics.jsonl and the same scalars as TensorBoard events,
written by the main process only. A resumed run first cuts metrics.jsonl back to its checkpoint's step, so
the file reads as if the run had never stopped; a fresh run starts it empty. A line that a crash tore is dropped,
and said, wherever the file is read."""
import json
import os
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from multissl import dist


def read_rows(path: Path, say: bool = True) -> list[dict]:
    """The rows of a metrics.jsonl; lines that are not whole JSON objects (torn by a crash mid-write) are dropped,
    and `say` tells how many."""
    rows, torn = [], []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
        else:
            torn.append(i)
    if torn and say:
        print(f"multissl: {path}: dropped {len(torn)} line(s) that are not whole rows (line {', '.join(map(str, torn[:5]))}"
              f"{' …' if len(torn) > 5 else ''}; a crash mid-write tears the last line)", file=sys.stderr)
    return rows


def evaluated(folder: Path, step: int) -> bool:
    """The run in `folder` exported its encoder and logged its final evaluation at `step` or later (the last things a
    run does: the only row without a training loss at its last step)."""
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file() or not (Path(folder) / "encoder" / "config.json").is_file():
        return False
    return any(r.get("step", -1) >= step and "loss" not in r for r in read_rows(path, say=False))


class RunLog:
    def __init__(self, folder: Path, cfg, resumed_step: int | None, main: bool):
        self.folder, self.main, self.writer = Path(folder), main, None
        if not main:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        rows = read_rows(self.path) if self.path.exists() else []
        if resumed_step is not None:  # drop rows logged after the checkpoint we resume from
            print(f"multissl: resuming {self.folder} from step {resumed_step}", file=sys.stderr)
        keep = [r for r in rows if resumed_step is not None and r["step"] <= resumed_step]
        if self.path.exists():  # rewritten whole, then renamed: a crash here keeps the old file
            tmp = self.path.with_name(".metrics.jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
            os.replace(tmp, self.path)
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(self.folder / "tb"))

    @property
    def path(self) -> Path:
        return self.folder / "metrics.jsonl"

    def write(self, row: dict):
        """row: {"step": int, name: number, …}; non-numbers go to the JSON only."""
        if not self.main:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                self.writer.add_scalar(k, v, row["step"])

    def close(self):
        if self.writer is not None:
            self.writer.close()


class ScalarLogs:
    """The scalars an objective returns in `logs` (every key but "rep"), averaged over a step's micro-batches;
    `mean()` averages them over processes too and names them "<objective>/<key>"."""

    def __init__(self, prefix: str):
        self.prefix, self.sums, self.counts = prefix, {}, {}

    def add(self, logs: dict):
        for k, v in logs.items():  # each key averaged over the micro-batches that logged it
            if k != "rep" and (isinstance(v, (int, float)) or torch.is_tensor(v) and v.numel() == 1):
                self.sums[k] = self.sums.get(k, 0.0) + torch.as_tensor(v, dtype=torch.float32).detach().reshape(())
                self.counts[k] = self.counts.get(k, 0) + 1

    def mean(self, device) -> dict:
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        values = dist.all_reduce(torch.stack([self.sums[k].to(device) / self.counts[k] for k in keys]), "mean")
        return {f"{self.prefix}/{k}": float(v) for k, v in zip(keys, values)}
