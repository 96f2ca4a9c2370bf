"""Pretrain an encoder on CartPole frames, then train a PPO agent on its frozen representation.

    python examples/rl_ppo.py                                   # byol, 300 steps, then 2048 PPO steps
    python examples/rl_ppo.py objective=simclr trainer.max_steps=1000
    python examples/rl_ppo.py ppo_steps=8192 objective=vicreg   # ppo_steps=N first: PPO's env steps

Needs stable-baselines3 (pip install multissl[rl]). The pretraining data is the default buffer: 10000
random-policy steps of CartPole rendered as 3 stacked 48x72 grayscale frames, collected once and cached.
make_env(**env_config) rebuilds that env, so the agent sees observations exactly as the buffer stores them.
"""
import sys

from stable_baselines3 import PPO

import multissl
from multissl.cli import load_config
from multissl.collect import make_env
from multissl.sb3 import policy_kwargs
from multissl.train import run

args = sys.argv[1:]
ppo_steps = int(args.pop(0).split("=", 1)[1]) if args and args[0].startswith("ppo_steps=") else 2048
overrides = args or ["objective=byol", "trainer.max_steps=300"]
folder = run(load_config(["domain=rl", "run.dir=runs/rl-example", *overrides]))

encoder = multissl.load_encoder(folder)  # weights + frame layout and pixel statistics, no pickles
env = make_env(**encoder.domain.env_config)  # observations [3 48 72] uint8, as stored
n_steps = min(256, ppo_steps)  # PPO collects a whole rollout before it updates: none longer than ppo_steps
agent = PPO("MlpPolicy", env, policy_kwargs=policy_kwargs(folder), n_steps=n_steps, batch_size=min(64, n_steps),
            n_epochs=4, seed=0, device="cpu")
agent.learn(total_timesteps=ppo_steps)  # the encoder stays frozen: only the policy and value heads learn


def mean_return(act, episodes: int = 5) -> float:
    """Mean undiscounted return of `act(obs) -> action` over `episodes` episodes with fixed seeds."""
    total = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=1000 + ep)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total, done = total + reward, terminated or truncated
    return total / episodes


env.action_space.seed(0)
print(f"PPO on frozen ssl features: mean return {mean_return(lambda o: agent.predict(o, deterministic=True)[0]):.1f}"
      f" over 5 episodes ({ppo_steps} training steps)")
print(f"random policy:              mean return {mean_return(lambda o: env.action_space.sample()):.1f}")
