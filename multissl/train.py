"""`python -m multissl.train domain=<d> objective=<o> [key=value …]` — one loop for every pair.

    accelerate launch -m multissl.train domain=audio objective=byol
"""
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list, set_seed
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from multissl import checkpoint, dist, monitor
from multissl.cli import load_config
from multissl.data import steps, train_loader
from multissl.errors import UserError
from multissl.export import save_encoder
from multissl.optim import build_optimizer
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


def build(cfg):
    """Domain (data loaded), encoder, objective — all from the config registry. Incompatible choices
    are refused from the classes' declarations, before any data is loaded."""
    enc_cls, obj_cls, dom_cls = (get_class(cfg[g]._target_) for g in ("encoder", "objective", "domain"))
    supported = getattr(enc_cls, "domains", None)
    if supported is not None and dom_cls.name not in supported:
        raise UserError(f"encoder={cfg.meta.encoder} works with domain={' or domain='.join(supported)}, not "
                        f"domain={dom_cls.name}; use encoder=transformer")
    if getattr(obj_cls, "needs_tokens", False) and not getattr(enc_cls, "supports_masking", False):
        raise UserError(f"objective={cfg.meta.objective} masks tokens but encoder={cfg.meta.encoder} has none; "
                        f"use encoder=transformer")
    domain = make(cfg.domain, data=OmegaConf.to_container(cfg.data))
    train_set, test_set = domain.dataset("train"), domain.dataset("test")
    if train_set is None or len(train_set) == 0:
        raise UserError("the training set is empty; check data.path (it needs at least one sample)")
    encoder = make(cfg.encoder, domain=domain)
    objective = make(cfg.objective, encoder=encoder, domain=domain)
    return domain, train_set, test_set, encoder, objective


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


def prepare_model(encoder, objective, accelerator) -> SSLModel:
    """On the device, identical on every process, BatchNorm over the global batch. No DDP wrapper:
    gradients are averaged after backward (`dist.average_gradients`)."""
    model = SSLModel(encoder, objective)
    if accelerator.num_processes > 1:
        model = dist.sync_batchnorm(model)
    model = model.to(accelerator.device)
    dist.broadcast_parameters(model)
    return model


def uses_batch_statistics(encoder, objective) -> bool:
    """True when the loss couples samples: negatives, covariance, centering (objective.batch_statistics)
    or BatchNorm anywhere in the encoder or heads."""
    bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in (*encoder.modules(), *objective.modules()))
    return bn or getattr(objective, "batch_statistics", False)


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


def evaluate(encoder, objective, domain, train_set, test_set, probe, cfg, device) -> dict:
    """kNN accuracy and online-probe accuracy on the held-out split; RankMe and std of the training
    representations (and of the projector output, where the objective has one); and the domain's own
    downstream metrics where it has them (`downstream_metrics(embed)`, e.g. tabular probe vs. GBDT)."""
    was = encoder.training
    encoder.eval()
    out, tr_x, labelled = monitor.heldout_metrics(encoder, domain, train_set, test_set, device, cfg.trainer.knn_k,
                                                  cfg.trainer.knn_temperature)
    proj = getattr(objective, "projector", None)
    if proj is not None:
        with torch.no_grad():
            was_p = proj.training
            z = proj.eval()(tr_x.to(device)).float().cpu()
            proj.train(was_p)
        out |= {"rankme_proj": monitor.rankme(z), "emb_std_proj": monitor.embedding_std(z)}
    if labelled is not None and probe is not None:
        te_x, te_y = labelled[2:]
        out["probe_test_acc"] = probe.accuracy(te_x.to(device), te_y.to(device))
    out |= monitor.domain_metrics(encoder, domain, device)
    encoder.train(was)
    if out["rankme"] < cfg.trainer.collapse_rankme or out["emb_std"] < cfg.trainer.collapse_std:
        out["collapse_warning"] = 1
        print(f"multissl: warning: the representation looks collapsed (RankMe {out['rankme']:.2f}, "
              f"std {out['emb_std']:.2e}; thresholds trainer.collapse_rankme={cfg.trainer.collapse_rankme}, "
              f"trainer.collapse_std={cfg.trainer.collapse_std}); lower the learning rate or check the "
              f"objective's variance/negatives terms", file=sys.stderr)
    return out


def run(cfg) -> Path:
    t = cfg.trainer
    AcceleratorState._reset_state()  # run() may be called again in one process (tests, notebooks)
    accelerator = Accelerator(mixed_precision=t.precision, cpu=not torch.cuda.is_available())
    set_seed(t.seed)
    domain, train_set, test_set, encoder, objective = build(cfg)
    world, rank = accelerator.num_processes, accelerator.process_index
    check_batch(cfg, world, encoder, objective)
    model = prepare_model(encoder, objective, accelerator)
    encoder, objective = model.encoder, model.objective
    lr = scaled_lr(cfg.optim.base_lr, cfg.data.batch_size, cfg.optim.scale_rule)
    optimizer = accelerator.prepare(build_optimizer(cfg.optim.name, [model], lr, cfg.optim.weight_decay,
                                                    cfg.optim.betas))
    n_classes = getattr(domain, "num_classes", None)
    probe = monitor.OnlineProbe(model.encoder.dim, n_classes, t.probe_lr).to(accelerator.device) \
        if n_classes and n_classes > 1 else None

    folder = run_folder(cfg, accelerator)
    step, last = 0, checkpoint.latest(folder / "checkpoints")
    if last is not None:  # trainer.resume=<dir> or a relaunch into an existing run folder
        state = checkpoint.load(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if probe is not None and state.get("probe"):
            probe.load_state_dict(state["probe"])
            probe.opt.load_state_dict(state["probe_opt"])
        checkpoint.set_rng_state(state["rng"])
        step = state["step"]
    main = accelerator.is_main_process
    writer = None
    if main:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(folder / "tb"))
        if last is not None:  # drop rows logged after the checkpoint we resume from
            print(f"multissl: resuming {folder} from step {step}", file=sys.stderr)
            log_file = folder / "metrics.jsonl"
            rows = log_file.read_text().splitlines() if log_file.exists() else []
            log_file.write_text("".join(r + "\n" for r in rows if r and json.loads(r)["step"] <= step))

    def log(row: dict):
        if main:
            with open(folder / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    writer.add_scalar(k, v, row["step"])

    def save_checkpoint():
        if main:
            checkpoint.save(folder / "checkpoints", step, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "probe": probe.state_dict() if probe else None, "probe_opt": probe.opt.state_dict() if probe else None,
                "rng": checkpoint.rng_state()})
        accelerator.wait_for_everyone()

    accum = t.accumulate
    loader = train_loader(train_set, domain, t.seed, objective.global_views, cfg.data.batch_size,
                          step, t.max_steps, rank, world, cfg.data.num_workers, accum,
                          corrupt=getattr(objective, "needs_tokens", False))
    bar = tqdm(total=t.max_steps, initial=step, disable=not main, dynamic_ncols=True, desc=str(folder))
    tic, seen, skipped = time.perf_counter(), 0, torch.zeros((), dtype=torch.long, device=accelerator.device)
    bad_run, bad_total, probe_logs = 0, 0, {}
    stop = StopSignal()
    model.train()
    for micro_batches in steps(loader, accum):
        sched = step_values(step, t.max_steps, cfg.optim, cfg.ema, lr)
        for g in optimizer.param_groups:
            g["lr"] = sched["lr"] * g.get("lr_scale", 1.0)
            g["weight_decay"] = 0.0 if g.get("exclude") else sched["wd"]
        loss, reps, ys = 0.0, [], []
        for batch in micro_batches:  # the step's loss is the mean of the micro-batch losses
            batch = {k: [v.to(accelerator.device) for v in x] if isinstance(x, list) else x.to(accelerator.device)
                     for k, x in batch.items()}
            skipped += batch.pop("skipped")
            with accelerator.autocast():
                micro_loss, logs = model(batch, sched)
            accelerator.backward(micro_loss / accum)
            loss = loss + micro_loss.detach() / accum
            reps.append(dist.gather(logs["rep"]))
            ys.append(dist.gather(batch["y"]))
        dist.average_gradients(model)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), t.grad_clip or math.inf)
        mean_loss = accelerator.reduce(loss, "mean")
        if torch.isfinite(mean_loss) and torch.isfinite(grad_norm):  # else: skip the update, count it
            optimizer.step()
            if hasattr(objective, "update_teacher"):
                objective.update_teacher(encoder, sched["ema"])
            probe_logs = probe.step(torch.cat(reps), torch.cat(ys)) if probe else {}
            bad_run = 0
        else:
            bad_run, bad_total = bad_run + 1, bad_total + 1
        optimizer.zero_grad(set_to_none=True)
        step += 1
        seen += cfg.data.batch_size
        bar.update(1)
        if step % t.log_every == 0 or step == t.max_steps:
            row = {"step": step, "loss": mean_loss.item(), "grad_norm": grad_norm.item(),
                   "lr": sched["lr"], "ema": sched["ema"], **probe_logs, "nonfinite_steps": bad_total,
                   "samples_per_s": seen / (time.perf_counter() - tic),
                   "skipped_samples": int(accelerator.reduce(skipped, "sum"))}
            log(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if t.eval_every and step % t.eval_every == 0 and step < t.max_steps:
            log({"step": step, **evaluate(encoder, objective, domain, train_set, test_set, probe, cfg,
                                          accelerator.device)})
        if bad_run >= t.max_nonfinite:
            raise UserError(f"{bad_run} consecutive steps had a non-finite loss or gradient (last: step {step}); "
                            f"the last good checkpoint is kept in {folder / 'checkpoints'} — lower optim.base_lr, "
                            f"set trainer.grad_clip, or check the data for NaN/Inf")
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.max_steps or stop.requested:
            save_checkpoint()
        if stop.requested:
            print(f"multissl: {stop.requested}: checkpoint saved at step {step} in {folder}; relaunch the same "
                  f"command to resume", file=sys.stderr)
            sys.exit(128 + stop.signum)
    bar.close()
    stop.restore()
    final = evaluate(encoder, objective, domain, train_set, test_set, probe, cfg, accelerator.device)
    log({"step": step, **final})
    save_checkpoint()
    if main:
        save_encoder(folder / "encoder", encoder, cfg.domain, cfg.encoder, domain.state())
        writer.close()
        shown = ", ".join(f"{k}={v:.4f}" for k, v in final.items())
        print(f"multissl: done: {folder} (step {step}; {shown})", file=sys.stderr)
    accelerator.end_training()
    return folder


def main(argv=None):
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    try:
        run(cfg)
    except UserError as e:
        print(f"multissl: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
