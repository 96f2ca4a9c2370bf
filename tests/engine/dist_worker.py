"""The distributed tier in one launch: `torchrun --nproc_per_node 2 dist_worker.py OUT` runs every check on 2
processes (gloo) and rank 0 saves what they computed; tests/engine/test_distributed.py calls the same functions
in its own process for the 1-process side. One launch for every pair keeps the tier's cost one process start,
not one per domain x objective."""
import os
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: toys, tiny

from tiny import TINY_ENCODER, domain_data  # noqa: E402

from multissl import dist  # noqa: E402
from multissl.cli import load_config, option_class, options, pairs  # noqa: E402
from multissl.plugins import yaml_options  # noqa: E402
from multissl.testing.parity import parity_step  # noqa: E402
from multissl.train import build_domain, run  # noqa: E402

DOMAINS, OBJECTIVES = options("domain"), options("objective")
PAIRS = pairs()
# options that change a loss without a config of their own (Garrido et al.'s SimCLR variants), in every domain too
VARIANTS = {"simclr-abs": ("objective=simclr", "objective.negatives=abs"),
            "simclr-square": ("objective=simclr", "objective.negatives=square"),
            "simclr-dims": ("objective=simclr", "objective.normalize=dimensions"),
            "rdm_simsiam-poly": ("objective=rdm_simsiam", "objective.online=poly", "objective.target_power=null")}
# the variants change a loss, not how a domain's batch is gathered: on images and on variable-length texts
# encoders other than the tiny transformer, with an objective of each kind they serve
ENCODERS = {f"text-bag-{o}": ("text", f"objective={o}", "encoder=bag", "encoder.dim=16", "encoder.buckets=256")
            for o in ("simclr", "mae")} | {
    f"{d}-convnet-{o}": (d, f"objective={o}", "encoder=convnet", "encoder.widths=[4,8]")
    for d, o in (("image", "simclr"), ("video", "byol"))}  # BatchNorm: statistics over the global batch
# audio read as the waveform (frame tokens, the window as a change of speed), and foundation models on it built from
# transformers configs: wav2vec 2.0 (its mask embedding at hidden frames) and AST (its filterbank, column tokens, local
# views of fewer columns); dropout off, as the tiny transformer has it (its masks are drawn per process)
HEADS = "hidden_size:16,num_hidden_layers:1,num_attention_heads:2,intermediate_size:32"
WAVE = {"audio-waveform-mae": ("audio", "objective=mae", "domain.input=waveform"),
        "audio-wav2vec2-data2vec": ("audio", "objective=data2vec", "domain.input=waveform", "encoder=hf",
                                    "encoder.config={model_type:wav2vec2,%s,conv_dim:[8,8,8,8,8,8,8],"
                                    "num_conv_pos_embeddings:16,num_conv_pos_embedding_groups:2,hidden_dropout:0,"
                                    "attention_dropout:0,activation_dropout:0}" % HEADS),
        "audio-ast-dino": ("audio", "objective=dino", "domain.input=waveform", "domain.frame=[2800,1600]", "encoder=hf",
                           "encoder.config={model_type:audio-spectrogram-transformer,%s,num_mel_bins:32,"
                           "max_length:98}" % HEADS)}
PARITY = {f"{d}-{o}": (d, f"objective={o}") for d, o in PAIRS} | {
    f"{d}-{v}": (d, *args) for d in ("image", "text") for v, args in VARIANTS.items()} | ENCODERS | WAVE
# end-to-end runs (tiny encoder): the objectives whose steps carry state at their default recipe on images (below), and
# every other domain once, the objectives taken in turn
RUN = ("trainer.max_steps=3", "trainer.log_every=1", "trainer.eval_every=0", "trainer.eval_samples=200")


def carries_state(o: str) -> bool:
    """What 3 steps check beyond the first step's parity: state moved between steps (after_step: teachers, queues,
    centres, banks) or a parameter group at a learning rate of its own (a predictor_lr)."""
    cls = option_class("objective", o)
    return "after_step" in dir(cls) or any(k.endswith("_lr") for k in OmegaConf.load(yaml_options("objective")[o]))


# every objective whose steps carry state from one to the next, at its default recipe; the others' first step is
# the parity tier's, and the strategy runs below take several steps of simclr, vicreg and mae
E2E = {f"image-{o}": ("domain=image", f"objective={o}", "trainer.seed=5", *TINY_ENCODER, "data.batch_size=32", *RUN,
                     "trainer.baseline=false")  # the untrained encoder's scores: once per domain, below
       for o in OBJECTIVES if ("image", o) in PAIRS and carries_state(o)}
FITS = {d: [o for o in OBJECTIVES if (d, o) in PAIRS] for d in DOMAINS}  # the objectives each domain trains
E2E |= {f"{d}-{FITS[d][i % len(FITS[d])]}": (f"domain={d}", f"objective={FITS[d][i % len(FITS[d])]}", *TINY_ENCODER,
                                              "data.batch_size=32", *domain_data([f"domain={d}"]), *RUN)
        for i, d in enumerate(x for x in DOMAINS if x != "image")}
E2E |= {f"{d}-{o}": (f"domain={d}", f"objective={o}", *TINY_ENCODER, "data.batch_size=32", *domain_data([f"domain={d}"]),
                     *RUN)  # an objective that images cannot train (SPR: episodes), on its first domain
        for d, o in dict((o, (d, o)) for d, o in reversed(PAIRS)).values() if ("image", o) not in PAIRS}
# images read by index from shards (tests/tiny.write_image_shards, in the launch's folder: {shards})
E2E["image-shards"] = ("domain=image", "objective=simclr", *TINY_ENCODER, "data.batch_size=16", "data.path={shards}", *RUN)
# the other strategies end to end (the default, ddp, runs every entry above): sharded with an EMA teacher and an
# lr-scaled predictor, with a last layer frozen for the first step and a centre, on variable-length texts; ddp with
# prototypes frozen for the first step (a parameter that gets its first gradient mid-run); the
# after-backward average; and 2 micro-batches a step, the gradients exchanged on the last one only (with fsdp, each
# block's activations recomputed in the backward pass)
E2E |= {f"{d}-{o}-{st}": (f"domain={d}", f"objective={o}", f"trainer.strategy={st}", *TINY_ENCODER, "data.batch_size=32",
                          *domain_data([f"domain={d}"]), *RUN, *more)
        for d, o, st, *more in (("image", "byol", "fsdp"), ("image", "dino", "fsdp", "objective.freeze_last_layer=2"),
                                ("text", "simclr", "fsdp"), ("image", "simclr", "average"),
                                ("image", "swav", "ddp", "objective.freeze_prototypes=2"),
                                ("image", "vicreg", "ddp", "trainer.accumulate=2"),
                                ("image", "mae", "fsdp", "trainer.accumulate=2", "encoder.checkpointing=true"))}
# the parity tier's strategies on 2 processes (one process has none) and their pairs: ddp, the default, every pair;
# fsdp on images the objectives whose modules shard differently (EMA teachers sharded like the student, an lr-scaled
# predictor, last layers and prototypes frozen at first, a bank, the encoder's other forward, kept tokens, the
# objective's mask token passed into the sharded encoder, steps encoded alone), and on every other domain the paths
# that are the domain's own: its embedder sharded with the encoder (simclr), data2vec's hidden_states, SPR on RL — or
# every pair with MULTISSL_FSDP_ALL=1 (the objectives left out shard as simclr does: an encoder and a head)
FSDP_IMAGE = ("simclr", "byol", "simsiam", "dino", "swav", "nnclr", "moco_v3", "meanshift", "data2vec", "ijepa", "mae",
              "simmim", "ibot", "msn", "cpc", "rdm_byol")
STRATEGIES = {"ddp": list(PARITY), "fsdp": [p for p in PARITY if os.environ.get("MULTISSL_FSDP_ALL") == "1"
                                            or p.split("-", 1)[1] in FSDP_IMAGE and p.startswith("image-")
                                            or p.split("-", 1)[1] in ("simclr", "data2vec", "spr")]}
QUEUE = {"_target_": "toys.QueueContrast", "size": 48, "dim": 16, "temperature": 0.2}


def parity(strategy: str = "ddp", pairs=None) -> dict:
    """First-step loss and gradients of every domain x objective as the engine computes them with trainer.strategy
    `strategy`, in float64 (the check is about gathering and averaging; float32 summation order alone moved a SimCLR
    gradient by 2e-5): multissl.testing's parity step, the one plugin authors run. `pairs`: names of PARITY (all)."""
    results, domains = {}, {}
    for name in pairs or PARITY:
        d, *args = PARITY[name]
        tiny = () if any(a.startswith("encoder=") for a in args) else TINY_ENCODER  # the transformer's keys
        cfg = load_config([*tiny, "data.batch_size=32", f"domain={d}", *args, *domain_data([f"domain={d}"]),
                           f"trainer.strategy={strategy}"])
        key = (d, *(a for a in args if a.startswith("domain.")))  # a domain per set of domain settings
        if key not in domains:
            domains[key] = build_domain(cfg)
        results[name] = parity_step(cfg, domains[key])
    return results


def end_to_end(out: Path):
    """The whole engine (data split, gathers, gradient average, after_step, logging, export) for 3 steps of each
    E2E config, into out/<name>."""
    for name, args in E2E.items():
        args = [a.format(shards=out.parent / "shards") for a in args]
        run(load_config([*args, f"run.dir={out / name}"]))


def queue(out: Path):
    """An objective whose queue is filled in after_step from the gathered batch: out/queue."""
    cfg = load_config([*TINY_ENCODER, "data.batch_size=32", "trainer.max_steps=3", "trainer.eval_every=0",
                       "trainer.eval_samples=64", f"run.dir={out / 'queue'}"])
    with open_dict(cfg):
        cfg.objective = dict(QUEUE)
        cfg.meta.objective = "queue"
    run(cfg)


def sharding() -> dict:
    """Elements this process holds of the image transformer's parameters, their gradients and AdamW's state under
    trainer.strategy=fsdp after one step, against the whole model's."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from multissl import strategy
    from multissl.build import build_models
    from multissl.data import make_views, objective_loader
    from multissl.train import prepare_model
    cfg = load_config(["domain=image", "objective=byol", "encoder.dim=32", "encoder.depth=4", "encoder.heads=2",
                       "data.batch_size=16", *domain_data(["domain=image"])])
    AcceleratorState._reset_state()
    domain = build_domain(cfg)
    model = prepare_model(*build_models(cfg, domain), Accelerator(cpu=True))
    whole = sum(p.numel() for p in model.parameters() if p.requires_grad)
    runner = strategy.wrap(model, "fsdp")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    loader = objective_loader(domain.dataset("train"), domain, model.objective, 0, 16, 0, 1, dist.rank(),
                              dist.world_size())
    batch = make_views(domain, next(iter(loader)))
    batch.pop("skipped")
    runner(batch, {"ema": 0.99, "lr": 1e-3, "wd": 0.0, "step": 0, "total_steps": 1, "progress": 0.0})[0].backward()
    opt.step()
    local = [p for p in model.parameters() if p.requires_grad]
    return {"whole": whole, "params": sum(p.to_local().numel() for p in local),
            "grads": sum(p.grad.to_local().numel() for p in local if p.grad is not None),
            "adam": sum(v.to_local().numel() for st in opt.state.values() for k, v in st.items() if k != "step")}


def collectives() -> dict:
    """all_gather and all_reduce of a tensor that differs per process."""
    x = torch.arange(6.0).view(3, 2) + 10 * dist.rank()
    return {"gather": dist.all_gather(x), "sum": dist.all_reduce(x), "mean": dist.all_reduce(x, "mean"), "x": x}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        results = {"parity": {st: parity(st, pairs) for st, pairs in STRATEGIES.items()}}
        end_to_end(out / "two")
        queue(out / "two")
        results["collectives"] = collectives()
        if dist.world_size() > 1:
            results["sharding"] = sharding()
    if dist.rank() == 0:
        torch.save(results, out / "two.pt")
    if dist.is_dist():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: gloo's threads sometimes abort there ("terminate called …")
