"""`python -m multissl.train domain=<d> objective=<o> [key=value …]` — one loop for every pair.

    accelerate launch -m multissl.train domain=audio objective=byol
"""
import gc
import math
import shlex
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import InitProcessGroupKwargs, broadcast_object_list, set_seed
from omegaconf import OmegaConf, open_dict
from torch import nn
from tqdm import tqdm

from multissl import baseline, checkpoint, dist, monitor, strategy
from multissl.build import build, build_domain, build_models, make  # noqa: F401  (the engine's API)
from multissl.cli import load_config
from multissl.compiled import compile_model
from multissl.contracts import Domain, Encoder, Objective, VariableLength, has, optional
from multissl.data import make_views, objective_loader, steps, to_device
from multissl.errors import UserError, disk_error, needs_extras
from multissl.export import save_encoder
from multissl.onnx_export import graph_inputs
from multissl.optim import apply_schedule, build_optimizer
from multissl.plugins import folder_name
from multissl.precision import Precision
from multissl.registry import read_yaml
from multissl.runlog import RunLog, ScalarLogs, evaluated
from multissl.schedules import scaled_lr, step_values
from multissl.stop import Stopped, StopSignal, Together


class SSLModel(nn.Module):
    """Encoder + objective as one module: one optimizer, one checkpoint, one gradient average."""

    def __init__(self, encoder, objective):
        super().__init__()
        self.encoder, self.objective = encoder, objective

    def forward(self, batch, sched):
        return self.objective(self.encoder, batch, sched)


def resume_command(cfg, folder: Path, world: int) -> str:
    """The command that continues this run: the launch's own overrides (meta.overrides) with
    trainer.resume=<folder> instead of any earlier one."""
    launcher = f"accelerate launch --num_processes {world} -m" if world > 1 else "python -m"
    args = [a for a in cfg.meta.get("overrides", []) if not a.lstrip("+~").startswith("trainer.resume=")]
    return shlex.join([*launcher.split(), "multissl.train", *args, f"trainer.resume={folder.resolve()}"])


def prepare_model(encoder, objective, accelerator) -> SSLModel:
    """On the device, identical on every process, BatchNorm over the global batch (trainer.strategy then shares
    it out: multissl.strategy.wrap)."""
    model = SSLModel(encoder, objective)
    if accelerator.num_processes > 1:
        model = dist.sync_batchnorm(model, device=accelerator.device)
    model = model.to(accelerator.device)
    dist.broadcast_parameters(model)
    return model


def uses_batch_statistics(encoder, objective) -> bool:
    """True when the loss couples samples: negatives, covariance, centering (objective.batch_statistics)
    or BatchNorm anywhere in the encoder or heads."""
    bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in (*encoder.modules(), *objective.modules()))
    return bn or optional(objective, Objective, "batch_statistics")


def check_batch(cfg, world: int, encoder, objective):
    """The global batch splits into trainer.accumulate micro-batches, each split over the processes.
    A batch-statistic loss sees one micro-batch at a time, so it needs at least 2 samples there."""
    b, acc = cfg.data.batch_size, cfg.trainer.accumulate
    if b < 1 or acc < 1:
        raise UserError(f"data.batch_size={b} and trainer.accumulate={acc} must be at least 1")
    if b % (world * acc):
        raise UserError(f"data.batch_size={b} is not divisible by {world} process(es) x trainer.accumulate={acc}; "
                        f"pick a multiple of {world * acc}")
    if not uses_batch_statistics(encoder, objective):
        return
    name = cfg.meta.objective
    if b // acc < 2:
        raise UserError(f"objective={name} needs at least 2 samples per micro-batch for its batch statistics "
                        f"(negatives, variance/covariance or BatchNorm), got {b // acc}; raise data.batch_size "
                        f"or lower trainer.accumulate")
    if acc > 1 and dist.rank() == 0:
        print(f"multissl: warning: trainer.accumulate={acc} with objective={name}: its batch statistics "
              f"(negatives, variance/covariance, BatchNorm) cover one micro-batch of {b // acc} samples, not "
              f"the {b} of data.batch_size; gradients are still averaged over all {b}", file=sys.stderr)


def run_folder(cfg) -> Path:
    """One folder per launch however many processes: the main process names it, the others receive it (on nodes
    without a shared filesystem only the main process's machine holds it)."""
    d, o = (folder_name(cfg.meta[g]) for g in ("domain", "objective"))
    name = [cfg.run.dir or cfg.trainer.resume or f"runs/{d}-{o}-{time.strftime('%Y%m%d-%H%M%S')}"]
    broadcast_object_list(name)
    return Path(name[0])


def check_reuse(folder: Path, cfg, groups):
    """A run folder holds one run: relaunching into it resumes that run, so other choices are refused by name."""
    path = folder / "config.yaml"
    old = (read_yaml(path).get("meta") or {}) if path.is_file() else {}
    differ = [g for g in groups if old.get(g) and old[g] != cfg.meta[g]]
    if differ:
        raise UserError(f"run.dir={folder} holds a run of {' '.join(f'{g}={old[g]}' for g in differ)}, not "
                        f"{' '.join(f'{g}={cfg.meta[g]}' for g in differ)}; relaunching into it resumes that run — "
                        f"choose another run.dir for this one")


def open_run(cfg) -> tuple[Path, dict | None, bool]:
    """The run folder, its latest checkpoint (None: a fresh run) and whether the run has finished already, read once
    by the main process and sent to the others."""
    folder = run_folder(cfg)
    saved, done = None, False
    if dist.rank() == 0:
        check_reuse(folder, cfg, ("domain", "objective", "encoder"))
        saved = checkpoint.latest_state(folder)
        done = finished(folder, saved, cfg.trainer.max_steps)
    box = [saved, done]
    broadcast_object_list(box)
    return folder, box[0], box[1]


def finished(folder: Path, saved: dict | None, max_steps: int) -> bool:
    """The run in `folder` reached trainer.max_steps, exported its encoder and logged its final evaluation: a relaunch
    has nothing to do (and must not log that evaluation twice)."""
    return saved is not None and saved["step"] >= max_steps and evaluated(folder, saved["step"])


def fit_batch(cfg, n_train: int, world: int):
    """A global batch larger than the training set would hold each sample several times (SimCLR's negatives would
    be its positives): it becomes the largest batch that holds each sample at most once, said in one line."""
    b, unit = cfg.data.batch_size, world * cfg.trainer.accumulate
    if b <= n_train:
        return cfg
    if n_train < unit:
        raise UserError(f"the training set holds {n_train} sample(s), fewer than {world} process(es) x "
                        f"trainer.accumulate={cfg.trainer.accumulate}; add data or use fewer processes")
    fitted = n_train // unit * unit
    if dist.rank() == 0:
        print(f"multissl: data.batch_size={b} is more than the {n_train} training samples: each step takes "
              f"{fitted} (a sample at most once per batch)", file=sys.stderr)
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.data.batch_size = fitted
    return cfg


def run(cfg, data=None, signals: bool = True) -> Path:
    """Train, checkpoint, export and evaluate one run; returns its folder. Every process runs it; an error on any
    process ends all of them (multissl.stop). `data`: in-memory data the domain reads instead of data.path;
    `signals`: SIGTERM, SIGUSR1 and SIGINT end the run at the next step with a checkpoint (raising
    multissl.stop.Stopped)."""
    AcceleratorState._reset_state()  # its process-group timeout is this run's (run() may be called again)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[
        InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.trainer.timeout_s))])
    with Together(), needs_extras(f"domain={cfg.meta.domain} (with encoder={cfg.meta.encoder}, "
                                  f"objective={cfg.meta.objective})"):
        return train(cfg, accelerator, data, signals)


def train(cfg, accelerator, data=None, signals: bool = True) -> Path:
    t = cfg.trainer
    set_seed(t.seed)
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    folder, saved, done = open_run(cfg)  # a resumed run keeps what must not change (a tokenizer's ids)
    if done:
        if accelerator.is_main_process:
            print(f"multissl: {folder} finished at step {saved['step']} already: nothing to do (raise "
                  f"trainer.max_steps to train on, or choose another run.dir)", file=sys.stderr)
        return folder
    domain = build_domain(cfg, state=saved.get("domain") if saved else None, data=data)
    train_set, test_set = domain.dataset("train"), domain.dataset("test")
    monitor.eval_caps(t.eval_samples)  # a bad trainer.eval_samples fails now, not at the first evaluation
    cfg = fit_batch(cfg, len(train_set), world)
    encoder, objective = build_models(cfg, domain)
    check_batch(cfg, world, encoder, objective)
    model = prepare_model(encoder, objective, accelerator)
    encoder, objective = model.encoder, model.objective
    init = baseline.snapshot(encoder) if t.baseline else None  # the same seed's weights before any step
    if t.compile:
        compile_model(model, dynamic=has(domain, VariableLength))
    runner = strategy.wrap(model, t.strategy)  # what each step calls; `model` holds the (sharded) parameters
    after_step = optional(objective, Objective, "after_step")
    lr = scaled_lr(cfg.optim.base_lr, cfg.data.batch_size, cfg.optim.scale_rule)
    optimizer = build_optimizer(cfg.optim.name, [model], lr, cfg.optim.weight_decay, cfg.optim.betas)
    precision = Precision(t.precision, device)
    if t.precision == "auto" and precision.dtype is not None and accelerator.is_main_process:
        print(f"multissl: trainer.precision=auto: {precision.name} autocast on {device} (trainer.precision=no for "
              f"float32)", file=sys.stderr)
    n_classes = optional(domain, Domain, "num_classes")
    probe = monitor.OnlineProbe(encoder.dim, n_classes, t.probe_lr).to(device) if n_classes and n_classes > 1 else None
    resumed = checkpoint.resume(strategy.place(saved, model, optimizer), model, optimizer, probe, precision.scaler,
                                folder)
    step, saved = resumed or 0, None
    main = accelerator.is_main_process
    runlog = RunLog(folder, cfg, resumed, main)

    def evaluate() -> dict:
        with strategy.whole(model):
            out = monitor.evaluate(encoder, objective, domain, train_set, test_set, probe, device, t.knn_k,
                                   t.knn_temperature, t.eval_samples)
        return out | monitor.collapse_warning(out, t.collapse_rankme, t.collapse_std,
                                              optional(objective, Objective, "collapse_hint"))

    def save_checkpoint():
        if main or strategy.sharded(model):  # shards are gathered by every process
            state = strategy.full(checkpoint.training_state(step, model, optimizer, probe, domain.state(),
                                                            precision.scaler))
        if main:
            checkpoint.save(folder / "checkpoints", step, state)
        accelerator.wait_for_everyone()

    accum = t.accumulate
    loader = objective_loader(train_set, domain, objective, t.seed, cfg.data.batch_size, step, t.max_steps, rank,
                              world, cfg.data.num_workers, accum, say=main)
    bar = tqdm(total=t.max_steps, initial=step, disable=not main, dynamic_ncols=True, desc=str(folder))
    tic, seen, skipped = time.perf_counter(), 0, torch.zeros((), dtype=torch.long, device=device)
    bad_run, bad_total, probe_logs = 0, 0, {}
    stop = StopSignal(install=signals)
    model.train()
    for micro_batches in steps(loader, accum):
        sched = step_values(step, t.max_steps, cfg.optim, cfg.ema, lr)
        apply_schedule(optimizer, sched)
        # a skipped step leaves buffers (BN statistics, queues) as they were
        buffers = [b.clone() for b in model.buffers()]
        loss, reps, ys, logs = 0.0, [], [], ScalarLogs(cfg.meta.objective)
        for i, batch in enumerate(micro_batches):  # the step's loss is the mean of the micro-batch losses
            batch = make_views(domain, to_device(batch, device))
            skipped += batch.pop("skipped")
            with strategy.sync(runner, model, last=i == len(micro_batches) - 1):
                with precision.autocast():
                    micro_loss, out = runner(batch, sched)
                precision.backward(micro_loss / accum)
            loss = loss + micro_loss.detach().float() / accum
            logs.add(out)
            reps.append(dist.gather(out["rep"]))
            ys.append(dist.gather(batch["y"]))
        strategy.after_backward(model, t.strategy)
        precision.unscale(optimizer)
        grad_norm = strategy.grad_norm(accelerator.clip_grad_norm_(model.parameters(), t.grad_clip or math.inf))
        mean_loss = accelerator.reduce(loss, "mean")
        finite = bool(torch.isfinite(mean_loss) and torch.isfinite(grad_norm))
        precision.step(optimizer, finite)  # else: skip the update, count it
        if finite:
            after_step(encoder, sched)
            probe_logs = probe.step(torch.cat(reps), torch.cat(ys)) if probe else {}
            bad_run = 0
        else:
            bad_total += 1
            bad_run = bad_run if precision.overflowed(bool(torch.isfinite(mean_loss))) else bad_run + 1
            with torch.no_grad():
                for b, kept in zip(model.buffers(), buffers):
                    b.copy_(kept)
        optimizer.zero_grad(set_to_none=True)
        step += 1
        seen += cfg.data.batch_size
        bar.update(1)
        if step % t.log_every == 0 or step == t.max_steps:
            row = {"step": step, "loss": mean_loss.item(), "grad_norm": grad_norm.item(), "lr": sched["lr"],
                   "ema": sched["ema"], **logs.mean(device), **probe_logs, "nonfinite_steps": bad_total,
                   **precision.logs(), "samples_per_s": seen / (time.perf_counter() - tic),
                   "skipped_samples": int(accelerator.reduce(skipped, "sum"))}
            runlog.write(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if t.eval_every and step % t.eval_every == 0 and step < t.max_steps:
            runlog.write({"step": step, **evaluate()})
        if bad_run >= t.max_nonfinite:
            raise UserError(f"{bad_run} consecutive steps had a non-finite loss or gradient (last: step {step}); "
                            f"the last good checkpoint is kept in {folder / 'checkpoints'} — lower optim.base_lr, "
                            f"set trainer.grad_clip, or check the data for NaN/Inf")
        stopping = stop.agreed(device)  # a signal to any process stops every process at this step
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.max_steps or stopping:
            save_checkpoint()
        if stopping:
            stop.restore()
            raise Stopped(stop.signum, f"{stop.requested}: checkpoint saved at step {step} in {folder}; to resume, "
                                       f"run: {resume_command(cfg, folder, world)}")
    bar.close()
    stop.restore()
    save_checkpoint()  # the checkpoint and the export come first: an evaluation that fails loses neither
    weights = strategy.full(encoder.state_dict())
    if main:
        recorded = optional(encoder, Encoder, "exported_config")(OmegaConf.to_container(cfg.encoder, resolve=True))
        save_encoder(folder / "encoder", weights, cfg.domain, recorded, domain.state(),
                     graph_inputs(domain, train_set[0]["x"]))
    final = evaluate()
    if init is not None:
        final |= baseline.untrained_metrics(init, domain, train_set, test_set, device, t.knn_k,
                                            t.knn_temperature, t.eval_samples)
        final |= baseline.raw_metrics(domain, train_set, test_set, device, t.knn_k, t.knn_temperature,
                                      t.eval_samples)
    runlog.write({"step": step, **final})
    if main:
        runlog.close()
        shown = ", ".join(f"{k}={v:.4f}" for k, v in final.items() if not k.startswith("eval/"))
        print(f"multissl: done: {folder} (step {step}; {shown})", file=sys.stderr)
        note = monitor.cap_note(train_set, test_set, t.eval_samples)
        if note:
            print(f"multissl: {note}", file=sys.stderr)
        if init is not None:
            lines = [*baseline.table(final), baseline.verdict(final, domain, baseline.heldout_count(test_set,
                                                                                                   t.eval_samples)),
                     baseline.raw_verdict(final, domain)]
            print("\n".join(f"multissl: {line}" for line in lines if line), file=sys.stderr)
    return folder  # the process group stays up for another run() in this process; main() ends it


def execute(cfg) -> int:
    """run(cfg) as a command: the exit status, with a UserError (or a full disk) as its one line — printed by the
    process where it happened, once, when several processes run."""
    try:
        run(cfg)
        return 0
    except Stopped as e:
        if dist.rank() == 0:
            print(f"multissl: {e}", file=sys.stderr)
        return 128 + e.signum
    except UserError as e:
        if getattr(e, "shown_elsewhere", None):
            return e.shown_elsewhere
        print(f"multissl: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        why = disk_error(e)
        if why is None:
            raise
        print(f"multissl: error: {why}", file=sys.stderr)
        return 2
    except Exception as e:
        if getattr(e, "shown_elsewhere", None):
            return e.shown_elsewhere
        if "timed out" not in str(e).lower():
            raise
        print(f"multissl: error: another process did not answer within trainer.timeout_s={cfg.trainer.timeout_s} s "
              f"(it hangs, or its machine is gone; its own output says why); this run stops — relaunch to resume, "
              f"and raise trainer.timeout_s if it was only slow", file=sys.stderr)
        return 1
    finally:
        gc.collect()  # a DDP wrapper left in a reference cycle is freed while its process group still exists
        PartialState().destroy_process_group()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "-m" in argv or "--multirun" in argv:  # every combination of comma-separated values, one run each
        from multissl.sweep import main as sweep
        sys.exit(sweep([a for a in argv if a not in ("-m", "--multirun")]))
    sys.exit(execute(load_config(argv)))


if __name__ == "__main__":
    main()
