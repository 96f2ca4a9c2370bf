"""The performance bench. Per domain, at its defaults and at a realistic size (benchmarks/realistic.py), for one
objective of each family: data alone (draw in the loader workers + apply on the device), the model alone on a
pre-made batch, a bare hand-written loop of both (the same model, loss and optimizer), and `multissl.train`'s own
loop (logging and the online probe on, evaluation off) as a ratio to the bare loop; for MAE, token dropping
against the same MAE feeding mask tokens to the encoder.

    python benchmarks/throughput.py                                   # everything, on this machine
    python benchmarks/throughput.py --domains image --sizes real --objectives simclr,mae --steps 5
    python benchmarks/throughput.py --device cuda --precision bf16    # on a GPU
    python benchmarks/throughput.py … -- data.num_workers=0            # any training override after --
"""
import argparse
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import open_dict

sys.path.insert(0, str(Path(__file__).parent))
import results  # noqa: E402
from realistic import SIZES  # noqa: E402

from multissl.cli import load_config  # noqa: E402
from multissl.contracts import Masked, Objective, optional  # noqa: E402
from multissl.data import make_views, objective_loader, resolve_workers, to_device  # noqa: E402
from multissl.encoder import Encoder  # noqa: E402
from multissl.objectives.mae import MAE  # noqa: E402
from multissl.optim import build_optimizer  # noqa: E402
from multissl.schedules import scaled_lr, step_values  # noqa: E402
from multissl.train import SSLModel, build_domain, build_models, run  # noqa: E402

DOMAINS = {}
WARM = 2  # steps left out of every timing (allocation, worker start-up, first-call caches)


class MaskTokenMAE(MAE):
    """The same MAE with the encoder fed every token, the masked ones replaced by a learned token (SimMIM /
    BEiT style): what MAE's token dropping saves. Bench-only; it reads the transformer Encoder's parts."""

    def __init__(self, encoder, domain, **kw):
        super().__init__(encoder, domain, **kw)
        self.enc_mask = torch.nn.Parameter(torch.zeros(1, 1, encoder.dim))

    def predict(self, encoder, batch):
        t = encoder.embed(batch["views"][0])  # [b n d]
        hidden = torch.zeros(t.shape[:2], dtype=torch.bool, device=t.device).scatter_(1, batch["masked"], True)
        t = torch.where(hidden[..., None], self.enc_mask.to(t.dtype), t)
        if encoder.cls is not None:
            t = torch.cat([encoder.cls.expand(t.shape[0], -1, -1), t], 1)
        t = encoder.norm(encoder.blocks(t))
        pooled, t = (t[:, 0], t[:, 1:]) if encoder.cls is not None else (t.mean(1), t)
        keep = torch.arange(t.shape[1], device=t.device).expand(t.shape[0], -1)  # every position is encoded
        return self.decoder(t, keep), pooled


class Bench:
    def __init__(self, args, domain: str, size: str, objective: str, extra: list):
        self.args, self.device = args, torch.device(args.device)
        cfg = load_config([f"domain={domain}", f"objective={objective}", *SIZES[domain][size](args.scale),
                           f"trainer.precision={args.precision}", *extra])
        key = (domain, size, args.scale, tuple(extra))
        if key not in DOMAINS:  # data loaded (and statistics fitted) once per domain and size
            DOMAINS[key] = build_domain(cfg)
        self.domain = DOMAINS[key]
        self.cfg = cfg  # the domain's encoder for its data was chosen when the config was composed
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if args.precision == "bf16"
                         else nullcontext())

    def model(self, mask_tokens: bool = False):
        torch.manual_seed(0)
        encoder, objective = build_models(self.cfg, self.domain)
        if mask_tokens:
            kw = {k: v for k, v in self.cfg.objective.items() if k != "_target_"}
            objective = MaskTokenMAE(encoder, self.domain, **kw)
        model = SSLModel(encoder, objective).to(self.device).train()
        c = self.cfg
        lr = scaled_lr(c.optim.base_lr, c.data.batch_size, c.optim.scale_rule)
        return model, build_optimizer(c.optim.name, [model], lr, c.optim.weight_decay, c.optim.betas)

    def loader(self, objective, steps: int, workers=None):
        c = self.cfg
        return objective_loader(self.domain.dataset("train"), self.domain, objective, c.trainer.seed,
                                c.data.batch_size, 0, steps, 0, 1, c.data.num_workers if workers is None else workers)

    def timed(self, batches, work) -> float:
        """ms per item of `batches` after WARM, each handled by work(i, batch)."""
        for i, batch in enumerate(batches):
            if i == WARM:
                self.sync()
                t = time.perf_counter()
            work(i, batch)
        self.sync()
        return (time.perf_counter() - t) / self.args.steps * 1e3

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step(self, model, opt, batch, i):
        sched = step_values(i, WARM + self.args.steps, self.cfg.optim, self.cfg.ema, opt.param_groups[0]["lr"])
        with self.autocast:
            loss, _ = model(batch, sched)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        optional(model.objective, Objective, "after_step")(model.encoder, sched)
        self.finite = self.finite and bool(torch.isfinite(loss.detach()))
        return loss

    def measure(self, framework: bool = True, host: bool = True) -> dict:
        """The row of figures; framework / host: also time multissl.train's loop / the host side on one core."""
        n, b = WARM + self.args.steps, self.cfg.data.batch_size
        model, opt = self.model()
        self.finite = True
        views = lambda batch: make_views(self.domain, to_device(batch, self.device))  # noqa: E731
        out = {"batch": b, "workers": resolve_workers(self.cfg.data.num_workers), "encoder": self.cfg.meta.encoder}
        out["data_ms"] = self.timed(self.loader(model.objective, n), lambda i, x: views(x))
        if host:  # decode + draw + collate on one core, without the device's apply
            out["host_samples_per_s_core"] = b / self.timed(self.loader(model.objective, n, 0), lambda i, x: None) * 1e3
        fixed = views(next(iter(self.loader(model.objective, 1))))
        out["model_ms"] = self.timed([fixed] * n, lambda i, x: self.step(model, opt, x, i))
        bare, loop = [], []
        # bare and framework loops alternate; the fastest of each counts (this machine's noise only slows a run)
        for _ in range(self.args.repeats if framework else 1):
            model, opt = self.model()
            bare.append(self.timed(self.loader(model.objective, n), lambda i, x: self.step(model, opt, views(x), i)))
            if framework:
                loop.append(self.framework())
        out["full_ms"] = min(bare)
        out["data_share"] = out["data_ms"] / out["full_ms"]
        out["samples_per_s"] = b / out["full_ms"] * 1e3
        if framework:
            out["framework_ms"] = min(loop)
            out["framework_vs_bare"] = out["framework_ms"] / out["full_ms"]
        drops = optional(self.domain, Masked, "drops_masked")
        if framework and isinstance(model.objective, MAE) and isinstance(model.encoder, Encoder) and drops:
            tokens, opt_t = self.model(mask_tokens=True)
            out["mae_mask_tokens_ms"] = self.timed([fixed] * n, lambda i, x: self.step(tokens, opt_t, x, i))
            out["mae_drop_speedup"] = out["mae_mask_tokens_ms"] / out["model_ms"]
        return out

    def framework(self) -> float:
        """ms per step of multissl.train's loop, from its own metrics: it logs every `steps` steps (about as
        often as its default) and runs twice that, and the time between its two log rows is what counts;
        start-up, the final evaluation and the export are left out."""
        cfg, every = self.cfg.copy(), max(self.args.steps, WARM)
        with tempfile.TemporaryDirectory() as tmp:
            with open_dict(cfg):
                cfg.trainer.max_steps, cfg.trainer.log_every, cfg.trainer.eval_every = 2 * every, every, 0
                cfg.trainer.checkpoint_every, cfg.trainer.eval_samples, cfg.run.dir = 0, 64, tmp
            run(cfg)
            rows = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        rows = {r["step"]: r for r in rows if "samples_per_s" in r}
        at = {s: s * self.cfg.data.batch_size / r["samples_per_s"] for s, r in rows.items()}  # seconds since start
        return (at[2 * every] - at[every]) / every * 1e3


FAMILIES = "simclr,byol,vicreg,mae"  # contrastive, distillation, canonical correlation, masked modeling


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--domains", default="image,audio,rl,tabular,text,video")
    p.add_argument("--objectives", default=FAMILIES)
    p.add_argument("--sizes", default="default,real")
    p.add_argument("--steps", type=int, default=8, help="timed steps per measurement (after %d warm-up)" % WARM)
    p.add_argument("--repeats", type=int, default=3, help="bare and framework loops, alternated; the fastest counts")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="no", choices=["no", "bf16"])
    p.add_argument("--scale", type=float, default=1.0, help="realistic data set size factor (smoke tests: small)")
    p.add_argument("--json", help="also write the rows to this file")
    results.add_argument(p)
    p.add_argument("overrides", nargs="*", help="training overrides, e.g. data.num_workers=0")
    args = p.parse_args(argv)
    setting = (f"{torch.get_num_threads()} threads, device {args.device}, precision {args.precision}, "
               f"{args.steps} steps after {WARM} warm-up")
    print(setting, flush=True)
    cols = ["domain", "size", "objective", "encoder", "batch", "workers", "data_ms", "model_ms", "full_ms",
            "data_share", "samples_per_s", "host_samples_per_s_core", "framework_vs_bare", "mae_drop_speedup"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    print("\n".join(lines), flush=True)
    rows = []
    for domain in args.domains.split(","):
        for size in args.sizes.split(","):
            for objective in args.objectives.split(","):
                row = {"domain": domain, "size": size, "objective": objective,
                       **Bench(args, domain, size, objective, args.overrides).measure()}
                rows.append(row)
                cells = [f"{row[c]:.3g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in cols]
                lines.append("| " + " | ".join(cells) + " |")
                print(lines[-1], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    results.write(Path(args.results) / f"throughput-{args.sizes.replace(',', '-')}.md", "\n".join(lines),
                  results.command_line(__file__, argv), note=setting + ".")
    return rows


if __name__ == "__main__":
    main()
