"""`python -m multissl.collect env=CartPole-v1 steps=20000 out=buffer.npz` — run a gymnasium env with a random
(or given) policy and write a replay buffer in multissl's format (docs/domains/rl.md).

    python -m multissl.collect env=CartPole-v1 steps=20000 out=cartpole.npz            # pixels + true state
    python -m multissl.collect env=ALE/Pong-v5 steps=5000 out=pong.npz                  # 4 x 84 x 84 grayscale
    python -m multissl.collect env=CartPole-v1 pixels=false steps=5000 out=states.npz  # state vectors
    python -m multissl.collect env=CartPole-v1 policy=my_agents:act out=expert.npz     # act(obs) -> action

Keys: env, steps, out, seed, policy (random | module:callable — a function of the observation, or of the
observation and the true state for a scripted controller, or an object with SB3's .predict), pixels (classic control: observations rendered with render_mode="rgb_array"; default
true), size ([height, width]; classic control 64x96, Atari 84x84), grayscale (Atari default true),
frame_stack (Atari 4, else 1), frame_skip (action repeat: Atari 4, else 1), max_episode_steps.

`make_env(...)` builds the same env for an agent, so it sees observations exactly as the buffer stores them.
"""
import importlib
import json
import os
import sys
from collections import deque
from pathlib import Path

import numpy as np

from multissl.errors import needs_extras, reason, UserError

STATE_NAMES = {"CartPole": ["cart_position", "cart_velocity", "pole_angle", "pole_angular_velocity"],
               "MountainCar": ["position", "velocity"], "Acrobot": ["cos_theta1", "sin_theta1", "cos_theta2",
                                                                   "sin_theta2", "theta1_dot", "theta2_dot"],
               "Pendulum": ["cos_theta", "sin_theta", "theta_dot"]}
CLASSIC_SIZE, ATARI_SIZE = (64, 96), (84, 84)  # classic control renders 400 x 600: keep its 2:3 aspect
KEYS = ("env", "steps", "out", "seed", "policy", "pixels", "size", "grayscale", "frame_stack", "frame_skip",
        "max_episode_steps")


def is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/") or "NoFrameskip" in env_id


def frame_to_uint8(frame: np.ndarray, size, grayscale: bool) -> np.ndarray:
    """A rendered [H W 3] (or grayscale [H W]) uint8 frame -> [h w 3] or [h w] (ITU-R 601 luma), resized with
    PIL's antialiasing bilinear filter (no thread pool: ~3x faster than torch's on one small frame)."""
    from PIL import Image
    im = Image.fromarray(np.ascontiguousarray(frame))
    if grayscale and im.mode != "L":
        im = im.convert("L")
    if size is not None and im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def _wrappers():
    import gymnasium as gym

    class Pixels(gym.Wrapper):
        """Observations = the rendered frame (resized, optionally grayscale); info["state"] = the env's own
        observation, the true low-dimensional state. Each action is repeated `skip` times (rewards summed),
        as pixel-based control does (action repeat), so that motion between observations is visible."""

        def __init__(self, env, size, grayscale: bool, skip: int = 1):
            super().__init__(env)
            self.size, self.grayscale, self.skip = size, grayscale, skip
            self.observation_space = gym.spaces.Box(0, 255, tuple(size) if grayscale else (*size, 3), np.uint8)

        def _obs(self, state, info):
            return frame_to_uint8(self.env.render(), self.size, self.grayscale), {**info, "state": np.float32(state)}

        def reset(self, **kw):
            return self._obs(*self.env.reset(**kw))

        def step(self, action):
            total = 0.0
            for _ in range(self.skip):
                state, r, term, trunc, info = self.env.step(action)
                total += float(r)
                if term or trunc:
                    break
            obs, info = self._obs(state, info)
            return obs, total, term, trunc, info

    class Atari(gym.Wrapper):
        """The DQN preprocessing (Mnih et al. 2015; Machado et al. 2018): each action repeated `skip` frames
        with the rewards summed and the last two frames max-pooled (Atari sprites flicker), up to 30 no-op
        actions at reset, frames resized to `size` (grayscale by default)."""

        def __init__(self, env, size, grayscale: bool, skip: int, noop_max: int = 30):
            super().__init__(env)
            self.size, self.grayscale, self.skip, self.noop_max = size, grayscale, skip, noop_max
            self.observation_space = gym.spaces.Box(0, 255, tuple(size) if grayscale else (*size, 3), np.uint8)

        def _frame(self, frames):
            f = np.maximum(frames[-1], frames[-2]) if len(frames) > 1 else frames[-1]
            return frame_to_uint8(f, self.size, self.grayscale)

        def reset(self, **kw):
            obs, info = self.env.reset(**kw)
            for _ in range(int(self.np_random.integers(0, self.noop_max + 1))):  # seeded by reset(seed=)
                obs, _, term, trunc, info = self.env.step(0)
                if term or trunc:
                    obs, info = self.env.reset()
            return self._frame([obs]), info

        def step(self, action):
            frames, total = [], 0.0
            for _ in range(self.skip):
                obs, r, term, trunc, info = self.env.step(action)
                frames, total = [*frames[-1:], obs], total + float(r)
                if term or trunc:
                    break
            return self._frame(frames), total, term, trunc, info

    class Stack(gym.Wrapper):
        """The last k observations stacked on a new first axis; at reset the first one is repeated, so a stack
        never holds frames of another episode."""

        def __init__(self, env, k: int):
            super().__init__(env)
            self.k, self.frames = k, deque(maxlen=k)
            s = env.observation_space
            self.observation_space = gym.spaces.Box(np.repeat(s.low[None], k, 0), np.repeat(s.high[None], k, 0),
                                                    (k, *s.shape), s.dtype)

        def reset(self, **kw):
            obs, info = self.env.reset(**kw)
            self.frames.extend([obs] * self.k)
            return np.stack(self.frames), info

        def step(self, action):
            obs, r, term, trunc, info = self.env.step(action)
            self.frames.append(obs)
            return np.stack(self.frames), r, term, trunc, info

    return Pixels, Atari, Stack


def env_config(env: str = "CartPole-v1", pixels: bool | None = None, size=None, grayscale: bool | None = None,
               frame_stack: int | None = None, frame_skip: int | None = None,
               max_episode_steps: int | None = None) -> dict:
    """The settings with every default filled in: what the buffer records (`env_config`) and make_env takes."""
    atari = is_atari(env)
    pixels = True if pixels is None else bool(pixels)
    if atari and not pixels:
        raise UserError(f"env={env} is an Atari game: its observations are frames; drop pixels=false")
    size = None if not pixels else [int(s) for s in (size or (ATARI_SIZE if atari else CLASSIC_SIZE))]
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise UserError(f"size={size} must be [height, width] in pixels, e.g. size=[64,96]")
    grayscale = atari if grayscale is None else bool(grayscale)
    frame_stack = int(frame_stack or (4 if atari else 1))
    frame_skip = int(frame_skip or (4 if atari else 1))
    if (frame_stack > 1 or frame_skip > 1) and not pixels and not atari:
        raise UserError(f"frame_stack={frame_stack} and frame_skip={frame_skip} apply to frames; state vectors "
                        f"(pixels=false) are neither stacked nor skipped, drop them")
    if frame_stack < 1 or frame_skip < 1:
        raise UserError(f"frame_stack={frame_stack} and frame_skip={frame_skip} must be at least 1")
    return {"env": env, "pixels": pixels, "size": size, "grayscale": grayscale and pixels,
            "frame_stack": frame_stack, "frame_skip": frame_skip, "max_episode_steps": max_episode_steps}


def make_env(env: str = "CartPole-v1", **settings):
    """A gymnasium env whose observations are exactly what `collect` stores with the same settings: rendered,
    resized frames (classic control, info["state"] = the true state), Atari's preprocessing (grayscale,
    84 x 84, frame-skip, no-op starts), frame stacks, or the plain state vectors (pixels=False)."""
    import gymnasium as gym
    cfg = env_config(env, **settings)
    kw = {"max_episode_steps": cfg["max_episode_steps"]} if cfg["max_episode_steps"] else {}
    Pixels, Atari, Stack = _wrappers()
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen, no display or audio needed
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    try:
        if is_atari(env):
            import ale_py
            gym.register_envs(ale_py)
            e = Atari(gym.make(env, frameskip=1, obs_type="grayscale" if cfg["grayscale"] else "rgb", **kw),
                      cfg["size"], cfg["grayscale"], cfg["frame_skip"])
        elif cfg["pixels"]:
            e = Pixels(gym.make(env, render_mode="rgb_array", **kw), cfg["size"], cfg["grayscale"], cfg["frame_skip"])
        else:
            e = gym.make(env, **kw)
    except Exception as err:
        raise UserError(f"cannot make env {env}: {reason(err)}; use a gymnasium id such as CartPole-v1 or "
                        f"ALE/Pong-v5") from None
    return Stack(e, cfg["frame_stack"]) if cfg["frame_stack"] > 1 else e


def load_policy(spec):
    """None/"random" -> None (uniform random actions); "module:name" -> a callable obs -> action, or an object
    with SB3's predict(obs) -> (action, state)."""
    if spec is None or spec == "random":
        return None
    if not isinstance(spec, str):  # already a callable or a model
        return spec
    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as e:
        raise UserError(f"policy={spec}: {reason(e)}; give random or module:callable (a function of the "
                        f"observation returning an action)") from None


def act(policy, obs, env, state=None):
    if policy is None:
        return env.action_space.sample()
    if hasattr(policy, "predict"):
        return policy.predict(obs, deterministic=False)[0]
    return policy(obs, state) if takes_state(policy) else policy(obs)


def takes_state(policy) -> bool:
    """A scripted policy `f(obs, state)` reads the env's true state too (classic control: a balancing controller
    that collects competent episodes from pixels); `f(obs)` sees what an agent sees."""
    import inspect
    try:
        params = inspect.signature(policy).parameters.values()
    except (TypeError, ValueError):
        return False
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) >= 2


def collect(env: str = "CartPole-v1", steps: int = 20000, out=None, seed: int = 0, policy=None, **settings) -> dict:
    """Run `steps` env steps and return (and with `out`, save atomically) the buffer: obs [N ...] as the env
    gives them, action, reward, terminated, truncated (the step ended its episode), episode ids, and for
    classic control the true `state` [N S] with `state_names`; `env_config` (JSON) rebuilds the env."""
    steps = int(steps)
    if steps < 1:
        raise UserError(f"steps={steps} must be at least 1")
    cfg = env_config(env, **settings)
    e, policy = make_env(**cfg), load_policy(policy)
    e.action_space.seed(int(seed))
    try:
        return _record(e, cfg, policy, steps, int(seed), out)
    finally:
        e.close()


def _record(e, cfg, policy, steps: int, seed: int, out) -> dict:
    from ..cache import save_npz
    env = cfg["env"]
    obs, info = e.reset(seed=seed)
    rec = {k: [] for k in ("obs", "action", "reward", "terminated", "truncated", "episode", "state")}
    episode = 0
    for _ in range(steps):
        state = info.get("state", obs if not cfg["pixels"] else None)  # the true state of `obs`
        a = act(policy, obs, e, state)
        nxt, r, term, trunc, info = e.step(a)
        for k, v in (("obs", obs), ("action", a), ("reward", r), ("terminated", term), ("truncated", trunc),
                     ("episode", episode), ("state", state)):
            rec[k].append(v)
        if term or trunc:
            (obs, info), episode = e.reset(), episode + 1
        else:
            obs = nxt
    buf = {"obs": np.stack(rec["obs"]), "action": np.asarray(rec["action"]),
           "reward": np.asarray(rec["reward"], np.float32), "terminated": np.asarray(rec["terminated"], bool),
           "truncated": np.asarray(rec["truncated"], bool), "episode": np.asarray(rec["episode"], np.int64),
           "env_config": np.array(json.dumps(cfg))}
    if rec["state"][0] is not None and not is_atari(env):
        buf["state"] = np.stack(rec["state"]).astype(np.float32)
        names = next((v for k, v in STATE_NAMES.items() if env.startswith(k)), None)
        if names is None or len(names) != buf["state"].shape[1]:
            names = [f"state_{i}" for i in range(buf["state"].shape[1])]
        buf["state_names"] = np.array(names)
    if out is not None:
        save_npz(Path(out), buf)
    return buf


def parse(argv: list[str]) -> dict:
    import yaml
    out = {}
    for a in argv:
        key, eq, value = a.partition("=")
        if not eq or key not in KEYS:
            raise UserError(f"unknown argument {a!r}; keys: {', '.join(k + '=' for k in KEYS)}")
        out[key] = value if key in ("env", "out", "policy") else yaml.safe_load(value)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        sys.exit(0)
    try:
        kw = parse(argv)
        if "out" not in kw:
            raise UserError("out=<file.npz> is required: where to write the buffer")
        with needs_extras("multissl.collect"):
            buf = collect(**kw)
    except UserError as e:
        print(f"multissl: error: {e}", file=sys.stderr)
        sys.exit(2)
    n_ep = int(buf["episode"][-1]) + 1
    print(f"multissl: wrote {kw['out']}: {len(buf['obs'])} steps, {n_ep} episodes, obs {list(buf['obs'].shape[1:])} "
          f"{buf['obs'].dtype}" + (f", state {buf['state_names'].tolist()}" if "state" in buf else ""))


if __name__ == "__main__":
    main()
