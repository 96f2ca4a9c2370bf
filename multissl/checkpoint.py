"""Atomic checkpoints and exact resume. A checkpoint is written to a temporary name and renamed, so a kill or a full
disk mid-write leaves the previous one loadable and no temporary file behind; loading never executes code
(weights_only)."""
import os
import random
import re
from pathlib import Path

import torch

from multissl.errors import UserError, disk_error, reason

NAME = re.compile(r"^step_(\d+)\.pt$")


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]), "python_pos": random.getstate()[2]}


def set_rng_state(s: dict):
    torch.set_rng_state(s["torch"])
    random.setstate((3, tuple(s["python"]), s["python_pos"]))


def save(folder: Path, step: int, state: dict, keep: int = 2) -> Path:
    final = folder / f"step_{step:08d}.pt"
    tmp = folder / f".{final.name}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:  # a file object: a failed write surfaces as its OSError (torch's own says less)
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        why = "no space left (the disk or the file-size limit is full)" if disk_error(e) else reason(e)
        raise UserError(f"cannot write checkpoint {final.name} in {folder}: {why}; the previous checkpoint is kept — "
                        f"free space there or point run.dir at another disk, then relaunch to resume") from None
    for old in sorted(checkpoints(folder))[:-keep]:
        old[1].unlink(missing_ok=True)
    return final


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name)))


def load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"checkpoint {path} cannot be loaded safely ({str(e).splitlines()[0][:160]}); "
                        "it is corrupt or not a multissl checkpoint — delete it to fall back to an older one") from None


def latest(folder: Path) -> Path | None:
    found = checkpoints(folder)
    return found[-1][1] if found else None


def training_state(step: int, model, optimizer, probe, domain_state: dict | None = None, scaler=None) -> dict:
    """Everything exact resume needs: model (encoder, heads, teacher, objective buffers such as queues),
    optimizer, step, online probe, RNG state, the fp16 gradient scaler, and the domain's preprocessing state (a text
    tokenizer, whose ids must not change under a run)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "probe": probe.state_dict() if probe else None, "probe_opt": probe.opt.state_dict() if probe else None,
            "rng": rng_state(), "domain": domain_state, "scaler": scaler.state_dict() if scaler is not None else None}


def latest_state(folder: Path) -> dict | None:
    """The latest checkpoint of a run folder, loaded once (None: a fresh run). A resumed run hands its domain's state
    ("domain") to the domain before its models are built — a tokenizer decides the size of the token embedding —
    and the rest to `resume`."""
    last = latest(folder / "checkpoints")
    return None if last is None else load(last)


def resume(state: dict | None, model, optimizer, probe, scaler=None, folder: Path | None = None) -> int | None:
    """Load a checkpoint (latest_state) into model, optimizer, probe and fp16 scaler and restore the RNGs; returns
    its step, or None for no checkpoint (a fresh run). A checkpoint of another model is one line naming the folder."""
    if state is None:
        return None
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(f"the checkpoint in {folder or 'the run folder'} does not fit this model ({reason(e, 120)}): "
                        f"that run was made with other settings (see its config.yaml); choose another run.dir") \
            from None
    if probe is not None and state.get("probe"):
        probe.load_state_dict(state["probe"])
        probe.opt.load_state_dict(state["probe_opt"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state["step"]
