"""Does pretraining pay on users' replay buffers? A suite of rendered classic-control buffers, each arm paired with
the same seed's untrained encoder:

    python benchmarks/buffers.py [--buffers a,b] [--seeds 0,1,2] [--arms byol,vicreg] [--steps 500] \
        [--out runs/buffers] [--earlier results/buffers-suite.json] [key=value ...]

The buffers (BUFFERS below) differ in env, frame layout and policy: CartPole as the default buffer stores it (3
stacked grayscale frames, random policy) and as single colour frames from a noisy balancing controller (long
episodes, a narrow state distribution), Acrobot and Pendulum as 2 stacked grayscale frames under random actions,
MountainCar as 2 stacked colour frames from a noisy energy-pumping controller (random actions never leave the
valley). Each is collected once with `multissl.collect` (the controllers read the true state; the buffer stores
frames) under <out>/data/, and whole episodes are held out (seed 0, 20 % of them) as a buffer of their own that
pretraining never reads. An arm pretrains on the rest with the domain's defaults (the default encoder for its
observations), paired with its own untrained encoder (its overrides and seed, trainer.max_steps=0: the same
architecture, e.g. the token encoder a masked objective keeps). The state probe is the domain's:
a ridge regression (alpha 1) of the true state from frozen embeddings on one scale, fit on 1 %, 10 % and 100 % of
the training steps (5, 3 and 1 draws, the same for every arm and seed), scored as R² on the held-out steps and
averaged over the state variables. "pixels" (the obvious baseline, not an arm: no seeds) is the same probe on a
fixed random projection of the raw frames to 512 dimensions; each arm's line says on how many buffers it beats it.

Decided before any run (gains are arm minus untrained, same seed):

  B1  Over the suite, for the probe fit on 10 % of the steps, the mean paired gain is positive with a paired t
      (mean / standard error over every (buffer, seed) pair) above 2.
  B2  No buffer loses more than one standard error: for every buffer, mean gain > -sd / sqrt(seeds).
"""
from pathlib import Path

import numpy as np
import torch
from paired import arm_list, seed_list, suite_name, suite_parser, suite_report, suite_runs, train
from records import read_records, write_records
from results import command_line, write

BUFFERS = {
    "cartpole-stack": dict(env="CartPole-v1", steps=10000, size=[48, 72], grayscale=True, frame_stack=3),
    "cartpole-rgb": dict(env="CartPole-v1", steps=6000, size=[64, 64], grayscale=False, policy="balance"),
    "acrobot": dict(env="Acrobot-v1", steps=8000, size=[64, 64], grayscale=True, frame_stack=2),
    "mountaincar": dict(env="MountainCar-v0", steps=8000, size=[48, 72], grayscale=False, frame_stack=2,
                        policy="pump"),
    "pendulum": dict(env="Pendulum-v1", steps=8000, size=[64, 64], grayscale=True, frame_stack=2),
}
FRACTIONS = {0.01: 5, 0.1: 3, 1.0: 1}  # share of the training steps the probe is fit on -> draws


def controller(kind: str, noise: float, seed: int = 0):
    """A scripted policy f(obs, state): CartPole balancing on angle and angular velocity, or MountainCar pushing
    along its velocity; a random action with probability `noise`."""
    rng = np.random.default_rng(seed)

    def act(obs, state):
        if rng.random() < noise:
            return int(rng.integers(2 if kind == "balance" else 3))
        if kind == "balance":
            return int(state[2] + 0.5 * state[3] > 0)
        return 2 if state[1] >= 0 else 0

    return act


def prepare(name: str, root: Path, steps: int | None = None) -> tuple[Path, dict, dict]:
    """(training buffer path, training buffer, held-out buffer) of a suite buffer, collected and split once;
    `steps` replaces its size (tests)."""
    from multissl.domains.rl.buffer import read_buffer
    folder = root / "data" / (name if steps is None else f"{name}-{steps}")
    tr_path, te_path = folder / "train.npz", folder / "test.npz"
    if not te_path.exists():
        from multissl.collect import collect
        settings = dict(BUFFERS[name], **({} if steps is None else {"steps": steps}))
        policy = settings.pop("policy", None)
        noise = {"balance": 0.3, "pump": 0.2}.get(policy)
        buf = collect(seed=0, policy=controller(policy, noise) if policy else None, **settings)
        episodes = np.unique(buf["episode"])
        held = np.random.default_rng(0).choice(episodes, max(1, round(0.2 * len(episodes))), replace=False)
        test = np.isin(buf["episode"], held)
        folder.mkdir(parents=True, exist_ok=True)
        for path, rows in ((tr_path, ~test), (te_path, test)):
            np.savez(path, **{k: v[rows] if v.ndim and len(v) == len(test) else v for k, v in buf.items()})
    return tr_path, read_buffer(tr_path), read_buffer(te_path)


@torch.no_grad()
def embed(folder: Path, obs: np.ndarray, chunk: int = 1024) -> np.ndarray:
    from multissl import load_encoder
    enc = load_encoder(folder)
    return torch.cat([enc.embed(torch.from_numpy(obs[i:i + chunk])).float() for i in range(0, len(obs), chunk)]).numpy()


def random_pixels(tr_obs: np.ndarray, te_obs: np.ndarray, s_tr, s_te, dim: int = 512) -> tuple:
    """(train embeddings, train state, held-out embeddings, held-out state) of a fixed gaussian projection of the
    centred raw observations: what the probe reads with no encoder."""
    flat = lambda o: o.reshape(len(o), -1).astype(np.float32) / 255  # noqa: E731
    mu = flat(tr_obs).mean(0)
    w = np.random.default_rng(0).normal(size=(mu.size, dim)).astype(np.float32) / np.sqrt(mu.size)
    return (flat(tr_obs) - mu) @ w, s_tr, (flat(te_obs) - mu) @ w, s_te


def scores(emb_tr, s_tr, emb_te, s_te) -> dict:
    """{fraction: mean R^2 over the state variables, averaged over the draws of training steps}."""
    from multissl.domains.probes import state_r2
    out = {}
    for fraction, draws in FRACTIONS.items():
        r2 = []
        for d in range(draws if fraction < 1 else 1):
            idx = (np.arange(len(s_tr)) if fraction >= 1 else
                   np.random.default_rng(1000 + d).choice(len(s_tr), max(round(fraction * len(s_tr)), 8), replace=False))
            r2.append(float(state_r2(emb_tr[idx], s_tr[idx], emb_te, s_te, alpha=1.0).mean()))
        out[fraction] = float(np.mean(r2))
    return out


def run_suite(args) -> tuple[dict, dict, list[str]]:
    """({(buffer, arm, seed): {"trained": scores, "untrained": scores}} (paired.suite_runs), {buffer: the random-pixel
    reference's scores}, where earlier runs came from: the runs and pixel scores of args.earlier's records are read,
    not run)."""
    root = Path(args.out or "runs/buffers")
    earlier, pixels, said = read_records(args.earlier, "buffers", args.steps, seed_list(args.seeds))
    buffers = {}

    def run(name, overrides, seed, steps, folder):
        if name not in buffers:
            buffers[name] = prepare(name, root, args.collect_steps)
        tr_path, tr, te = buffers[name]
        if name not in pixels:  # a record's, else measured once
            pixels[name] = scores(*random_pixels(tr["obs"], te["obs"], tr["state"], te["state"]))
        data = (f"data.path={tr_path}", "trainer.eval_every=0", "trainer.baseline=false", "trainer.eval_samples=2048")
        train(root / name / folder, "rl", (*overrides, *data), seed, steps, 0, args.extra, 0)
        return scores(embed(root / name / folder, tr["obs"]), tr["state"], embed(root / name / folder, te["obs"]),
                      te["state"])

    results = suite_runs(args.buffers.split(","), arm_list(args.arms), seed_list(args.seeds),
                         args.steps, run, earlier)
    return results, pixels, said


def main(argv=None) -> dict:
    p = suite_parser(__doc__, "--buffers", ",".join(BUFFERS), "byol,vicreg")
    p.add_argument("--collect-steps", type=int, default=None, help="steps per buffer instead of the suite's (tests)")
    args = p.parse_args(argv)
    results, pixels, said = run_suite(args)
    buffers, seeds = args.buffers.split(","), seed_list(args.seeds)
    keys = {f"R² {f:.0%} steps": f for f in FRACTIONS}
    lines = suite_report(results, buffers, arm_list(args.arms), seeds, keys, "R² 10% steps", "B",
                         baseline=("pixels", pixels)) + [f"Earlier runs: {line}." for line in said]
    print("\n".join(lines))
    target = Path(args.results) / f"{suite_name('buffers', buffers, list(BUFFERS))}.md"
    write_records(target.with_suffix(".json"), "buffers", args.steps, results, command_line(__file__, argv),
                  "; ".join(said), pixels)
    write(target, "\n".join(lines),
          command_line(__file__, argv), note=f"Each buffer's fixed held-out steps; the state probe's R² of every arm "
          f"against the same seed's untrained encoder (paired); seeds {args.seeds}, {args.steps} steps; the claims "
          f"B1, B2 of this benchmark's docstring.")
    return results


if __name__ == "__main__":
    main()
