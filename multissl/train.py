"""`python -m multissl.train domain=<d> objective=<o> [key=value …]` — one loop for every pair.

    accelerate launch -m multissl.train domain=audio objective=byol
"""
import math
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import broadcast_object_list, set_seed
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf, open_dict
from torch import nn
from tqdm import tqdm

from multissl import baseline, checkpoint, dist, monitor
from multissl.cli import load_config
from multissl.contracts import Domain, Encoder, Objective, check, fits, optional
from multissl.data import make_views, objective_loader, steps, to_device
from multissl.errors import UserError
from multissl.export import save_encoder
from multissl.optim import apply_schedule, build_optimizer
from multissl.runlog import RunLog, ScalarLogs
from multissl.schedules import scaled_lr, step_values


class SSLModel(nn.Module):
    """Encoder + objective as one module: one optimizer, one checkpoint, one gradient average."""

    def __init__(self, encoder, objective):
        super().__init__()
        self.encoder, self.objective = encoder, objective

    def forward(self, batch, sched):
        return self.objective(self.encoder, batch, sched)


def make(node, **kwargs):
    """hydra's instantiate, with a UserError raised inside the class (a bad option, an encoder that cannot read
    the data) passed on as it is instead of wrapped in Hydra's InstantiationException and its traceback."""
    try:
        return instantiate(node, **kwargs, _convert_="all")
    except InstantiationException as e:
        if isinstance(e.__cause__, UserError):
            raise e.__cause__ from None
        raise


def build_domain(cfg):
    """The domain with its data loaded. Incompatible choices are refused from the classes' declarations
    first, before any data is loaded."""
    enc_cls, obj_cls, dom_cls = (get_class(cfg[g]._target_) for g in ("encoder", "objective", "domain"))
    supported = optional(enc_cls, Encoder, "domains")
    if supported is not None and dom_cls.name not in supported:
        raise UserError(f"encoder={cfg.meta.encoder} works with domain={' or domain='.join(supported)}, not "
                        f"domain={dom_cls.name}; use encoder=transformer")
    if optional(obj_cls, Objective, "needs_token_encoder") and not optional(enc_cls, Encoder, "supports_masking"):
        raise UserError(f"objective={cfg.meta.objective} masks tokens but encoder={cfg.meta.encoder} has none; "
                        f"use encoder=transformer")
    why = fits(dom_cls, obj_cls)
    if why:
        raise UserError(f"objective={cfg.meta.objective} cannot train on domain={cfg.meta.domain}: {why}")
    if optional(dom_cls, Domain, "variable_length") and not optional(enc_cls, Encoder, "supports_padding"):
        raise UserError(f"domain={cfg.meta.domain} has samples of different lengths but encoder={cfg.meta.encoder} "
                        f"needs a fixed size; use encoder=transformer")
    domain = make(cfg.domain, data=OmegaConf.to_container(cfg.data))
    check(domain, Domain, "domain")
    train_set = domain.dataset("train")
    if train_set is None or len(train_set) == 0:
        raise UserError("the training set is empty; check data.path (it needs at least one sample)")
    return domain


def build_models(cfg, domain):
    """Encoder and objective (heads, teacher, state) for a domain whose data is loaded."""
    encoder = make(cfg.encoder, domain=domain)
    check(encoder, Encoder, "encoder")
    return encoder, make(cfg.objective, encoder=encoder, domain=domain)


def domain_encoder(cfg, domain):
    """cfg with the domain's `default_encoder` for its loaded data (e.g. nature_cnn for RL frames) when the command
    chose no encoder (no encoder= and no encoder.* key) and the objective can use it; else cfg unchanged."""
    name, args = optional(domain, Domain, "default_encoder"), list(cfg.meta.get("overrides", []))
    keys = [a.lstrip("+~").split("=", 1)[0] for a in args]
    if name is None or name == cfg.meta.encoder or any(k == "encoder" or k.startswith("encoder.") for k in keys):
        return cfg
    new = load_config([*args, f"encoder={name}"])
    if (optional(get_class(cfg.objective._target_), Objective, "needs_token_encoder")
            and not optional(get_class(new.encoder._target_), Encoder, "supports_masking")):
        return cfg  # a masked objective keeps the token encoder
    cfg = cfg.copy()
    with open_dict(cfg):  # the encoder option and the engine defaults it sets (nature_cnn: optim.base_lr)
        cfg.encoder, cfg.optim, cfg.meta.encoder = new.encoder, new.optim, name
    print(f"multissl: encoder={name}, domain={cfg.meta.domain}'s choice for this data (name encoder= to choose "
          f"another)", file=sys.stderr)
    return cfg


def build(cfg):
    """Domain (data loaded), its splits, encoder, objective — all from the config registry."""
    domain = build_domain(cfg)
    return domain, domain.dataset("train"), domain.dataset("test"), *build_models(domain_encoder(cfg, domain), domain)


class StopSignal:
    """SIGTERM/SIGINT end the current step, save a checkpoint, and exit with a message."""

    def __init__(self):
        self.requested, self.signum, self.previous = None, 0, {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(self, signum, frame):
        self.requested, self.signum = signal.Signals(signum).name, signum

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def resume_command(cfg, folder: Path, world: int) -> str:
    """The command that continues this run: the launch's own overrides (meta.overrides) with
    trainer.resume=<folder> instead of any earlier one."""
    launcher = f"accelerate launch --num_processes {world} -m" if world > 1 else "python -m"
    args = [a for a in cfg.meta.get("overrides", []) if not a.lstrip("+~").startswith("trainer.resume=")]
    return shlex.join([*launcher.split(), "multissl.train", *args, f"trainer.resume={folder.resolve()}"])


def prepare_model(encoder, objective, accelerator) -> SSLModel:
    """On the device, identical on every process, BatchNorm over the global batch. No DDP wrapper:
    gradients are averaged after backward (`dist.average_gradients`)."""
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
    if acc > 1:
        print(f"multissl: warning: trainer.accumulate={acc} with objective={name}: its batch statistics "
              f"(negatives, variance/covariance, BatchNorm) cover one micro-batch of {b // acc} samples, not "
              f"the {b} of data.batch_size; gradients are still averaged over all {b}", file=sys.stderr)


def run_folder(cfg, accelerator) -> Path:
    """One folder per launch however many processes: the main process names it, the others receive it."""
    name = [cfg.run.dir or cfg.trainer.resume or
            f"runs/{cfg.meta.domain}-{cfg.meta.objective}-{time.strftime('%Y%m%d-%H%M%S')}"]
    broadcast_object_list(name)
    return Path(name[0])


def run(cfg) -> Path:
    t = cfg.trainer
    AcceleratorState._reset_state()  # run() may be called again in one process (tests, notebooks, workers)
    accelerator = Accelerator(mixed_precision=t.precision, cpu=not torch.cuda.is_available())
    set_seed(t.seed)
    domain = build_domain(cfg)
    folder = run_folder(cfg, accelerator)
    saved = checkpoint.latest_state(folder)  # a resumed run keeps what must not change (a tokenizer's ids)
    if saved is not None and saved.get("domain") is not None:
        optional(domain, Domain, "restore")(saved["domain"])
    cfg = domain_encoder(cfg, domain)
    train_set, test_set = domain.dataset("train"), domain.dataset("test")
    encoder, objective = build_models(cfg, domain)
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    check_batch(cfg, world, encoder, objective)
    model = prepare_model(encoder, objective, accelerator)
    encoder, objective = model.encoder, model.objective
    init = baseline.snapshot(encoder) if t.baseline else None  # the same seed's weights before any step
    after_step = optional(objective, Objective, "after_step")
    lr = scaled_lr(cfg.optim.base_lr, cfg.data.batch_size, cfg.optim.scale_rule)
    optimizer = accelerator.prepare(build_optimizer(cfg.optim.name, [model], lr, cfg.optim.weight_decay,
                                                    cfg.optim.betas))
    n_classes = optional(domain, Domain, "num_classes")
    probe = monitor.OnlineProbe(encoder.dim, n_classes, t.probe_lr).to(device) if n_classes and n_classes > 1 else None
    resumed = checkpoint.resume(saved, model, optimizer, probe)  # trainer.resume=<dir> or a relaunch into run.dir
    step = resumed or 0
    main = accelerator.is_main_process
    runlog = RunLog(folder, cfg, resumed, main)

    def evaluate() -> dict:
        out = monitor.evaluate(encoder, objective, domain, train_set, test_set, probe, device, t.knn_k,
                               t.knn_temperature, t.eval_samples)
        return out | monitor.collapse_warning(out, t.collapse_rankme, t.collapse_std,
                                              optional(objective, Objective, "collapse_hint"))

    def save_checkpoint():
        if main:
            checkpoint.save(folder / "checkpoints", step, checkpoint.training_state(step, model, optimizer, probe,
                                                                                    domain.state()))
        accelerator.wait_for_everyone()

    accum = t.accumulate
    loader = objective_loader(train_set, domain, objective, t.seed, cfg.data.batch_size, step, t.max_steps, rank,
                              world, cfg.data.num_workers, accum, say=main)
    bar = tqdm(total=t.max_steps, initial=step, disable=not main, dynamic_ncols=True, desc=str(folder))
    tic, seen, skipped = time.perf_counter(), 0, torch.zeros((), dtype=torch.long, device=device)
    bad_run, bad_total, probe_logs = 0, 0, {}
    stop = StopSignal()
    model.train()
    for micro_batches in steps(loader, accum):
        sched = step_values(step, t.max_steps, cfg.optim, cfg.ema, lr)
        apply_schedule(optimizer, sched)
        # a skipped step leaves buffers (BN statistics, queues) as they were
        buffers = [b.clone() for b in model.buffers()]
        loss, reps, ys, logs = 0.0, [], [], ScalarLogs(cfg.meta.objective)
        for batch in micro_batches:  # the step's loss is the mean of the micro-batch losses
            batch = make_views(domain, to_device(batch, device))
            skipped += batch.pop("skipped")
            with accelerator.autocast():
                micro_loss, out = model(batch, sched)
            accelerator.backward(micro_loss / accum)
            loss = loss + micro_loss.detach() / accum
            logs.add(out)
            reps.append(dist.gather(out["rep"]))
            ys.append(dist.gather(batch["y"]))
        dist.average_gradients(model)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), t.grad_clip or math.inf)
        mean_loss = accelerator.reduce(loss, "mean")
        if torch.isfinite(mean_loss) and torch.isfinite(grad_norm):  # else: skip the update, count it
            optimizer.step()
            after_step(encoder, sched)
            probe_logs = probe.step(torch.cat(reps), torch.cat(ys)) if probe else {}
            bad_run = 0
        else:
            bad_run, bad_total = bad_run + 1, bad_total + 1
            with torch.no_grad():
                for b, saved in zip(model.buffers(), buffers):
                    b.copy_(saved)
        optimizer.zero_grad(set_to_none=True)
        step += 1
        seen += cfg.data.batch_size
        bar.update(1)
        if step % t.log_every == 0 or step == t.max_steps:
            row = {"step": step, "loss": mean_loss.item(), "grad_norm": grad_norm.item(), "lr": sched["lr"],
                   "ema": sched["ema"], **logs.mean(device), **probe_logs, "nonfinite_steps": bad_total,
                   "samples_per_s": seen / (time.perf_counter() - tic),
                   "skipped_samples": int(accelerator.reduce(skipped, "sum"))}
            runlog.write(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if t.eval_every and step % t.eval_every == 0 and step < t.max_steps:
            runlog.write({"step": step, **evaluate()})
        if bad_run >= t.max_nonfinite:
            raise UserError(f"{bad_run} consecutive steps had a non-finite loss or gradient (last: step {step}); "
                            f"the last good checkpoint is kept in {folder / 'checkpoints'} — lower optim.base_lr, "
                            f"set trainer.grad_clip, or check the data for NaN/Inf")
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.max_steps or stop.requested:
            save_checkpoint()
        if stop.requested:
            print(f"multissl: {stop.requested}: checkpoint saved at step {step} in {folder}; to resume, run: "
                  f"{resume_command(cfg, folder, world)}", file=sys.stderr)
            sys.exit(128 + stop.signum)
    bar.close()
    stop.restore()
    final = evaluate()
    if init is not None:
        final |= baseline.untrained_metrics(encoder, init, domain, train_set, test_set, device, t.knn_k,
                                            t.knn_temperature, t.eval_samples)
    runlog.write({"step": step, **final})
    save_checkpoint()
    if main:
        save_encoder(folder / "encoder", encoder, cfg.domain, cfg.encoder, domain.state())
        runlog.close()
        shown = ", ".join(f"{k}={v:.4f}" for k, v in final.items())
        print(f"multissl: done: {folder} (step {step}; {shown})", file=sys.stderr)
        if init is not None:
            lines = [*baseline.table(final), baseline.verdict(final, domain, baseline.heldout_count(test_set,
                                                                                                   t.eval_samples))]
            print("\n".join(f"multissl: {line}" for line in lines if line), file=sys.stderr)
    return folder  # the process group stays up for another run() in this process; main() ends it


def main(argv=None):
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    try:
        run(cfg)
    except UserError as e:
        print(f"multissl: error: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        PartialState().destroy_process_group()


if __name__ == "__main__":
    main()
