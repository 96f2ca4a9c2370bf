"""`python -m multissl.collect`: classic-control pixels with the true state, frame stacks that never mix
episodes, state vectors, Atari preprocessing, time limits as truncation, given policies, and the CLI (one
real `python -m` run through the multissl.collect alias; its errors through main in-process)."""
import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from multissl.domains.rl import RLDomain, read_buffer
from multissl.domains.rl.collect import collect, main, make_env
from multissl.errors import UserError


@pytest.fixture(scope="module")
def pixels():
    return collect("CartPole-v1", 80, seed=1)


def test_classic_control_pixels_come_with_the_true_state(pixels):
    b = pixels
    assert b["obs"].shape == (80, 64, 96, 3) and b["obs"].dtype == np.uint8  # H x W x C, as gymnasium renders
    assert b["state"].shape == (80, 4) and b["state_names"].tolist()[0] == "cart_position"
    assert b["terminated"].dtype == bool and b["truncated"].dtype == bool and b["terminated"].any()
    # the state of step 0 is the reset state, and each later state is the one the env stepped into
    env = gym.make("CartPole-v1")
    s0, _ = env.reset(seed=1)
    np.testing.assert_allclose(b["state"][0], s0)
    ends = np.flatnonzero(b["terminated"] | b["truncated"])
    assert (np.diff(b["episode"]) == (b["terminated"] | b["truncated"])[:-1]).all()  # a new id after each end
    assert len(np.unique(b["episode"])) == len(ends) + (not (b["terminated"] | b["truncated"])[-1])
    cfg = json.loads(str(b["env_config"]))
    assert cfg["env"] == "CartPole-v1" and cfg["size"] == [64, 96] and cfg["frame_stack"] == 1
    # frames differ when the state does: the rendering follows the state
    assert not np.array_equal(b["obs"][0], b["obs"][5])


def test_make_env_gives_the_observations_collect_stores(pixels):
    env = make_env(**json.loads(str(pixels["env_config"])))
    obs, info = env.reset(seed=1)
    assert np.array_equal(obs, pixels["obs"][0]) and env.observation_space.contains(obs)
    np.testing.assert_allclose(info["state"], pixels["state"][0])


def test_frame_stacks_repeat_the_first_frame_and_never_mix_episodes():
    b = collect("CartPole-v1", 60, seed=0, size=[24, 36], grayscale=True, frame_stack=3, max_episode_steps=7)
    obs, ep = b["obs"], b["episode"]
    assert obs.shape == (60, 3, 24, 36)
    starts = np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]])
    for t in range(60):
        if t in starts:  # the first stack of an episode is its first frame, three times
            assert np.array_equal(obs[t][0], obs[t][2]) and np.array_equal(obs[t][1], obs[t][2])
        else:  # later stacks slide by one frame within the episode
            assert np.array_equal(obs[t][:2], obs[t - 1][1:])
    # max_episode_steps: a time limit ends episodes as truncated, every 7 steps at most
    assert b["truncated"].any() and (np.diff(starts) <= 7).all()


def test_state_vectors_when_pixels_are_off():
    b = collect("CartPole-v1", 30, pixels=False)
    assert b["obs"].shape == (30, 4) and b["obs"].dtype == np.float32
    np.testing.assert_array_equal(b["obs"], b["state"])


def test_atari_frames_are_preprocessed_and_stacked():
    b = collect("ALE/Pong-v5", 12, seed=0)
    assert b["obs"].shape == (12, 4, 84, 84) and b["obs"].dtype == np.uint8 and "state" not in b
    assert np.array_equal(b["obs"][1][:3], b["obs"][0][1:])  # a stack of the last four frames
    assert json.loads(str(b["env_config"]))["grayscale"] is True


def test_a_given_policy_chooses_the_actions(tmp_path, monkeypatch):
    b = collect("CartPole-v1", 20, pixels=False, policy=lambda obs: 1)
    assert (b["action"] == 1).all()
    (tmp_path / "my_agents.py").write_text("def act(obs):\n    return int(obs[2] > 0)  # push toward the lean\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    b = collect("CartPole-v1", 20, pixels=False, policy="my_agents:act")
    assert (b["action"] == (b["obs"][:, 2] > 0)).all()
    with pytest.raises(UserError, match="policy=nowhere:act"):
        collect("CartPole-v1", 5, policy="nowhere:act")


def test_a_scripted_policy_of_obs_and_state_reads_the_true_state_from_pixels():
    seen = []

    def balance(obs, state):  # a controller on the true state while the buffer stores frames
        seen.append((obs.shape, state.copy()))
        return int(state[2] + 0.5 * state[3] > 0)

    b = collect("CartPole-v1", 15, policy=balance, size=[24, 36])
    assert all(shape == (24, 36, 3) for shape, _ in seen)  # the observation is the frame
    np.testing.assert_array_equal(np.stack([s for _, s in seen]), b["state"])  # the state of that frame
    assert (b["action"] == (b["state"][:, 2] + 0.5 * b["state"][:, 3] > 0)).all()


@pytest.mark.slow
def test_cli_writes_a_buffer_the_domain_reads(tmp_path):
    out = subprocess.run([sys.executable, "-m", "multissl.collect", "env=CartPole-v1", "steps=40", "out=b.npz",
                          "size=[24,36]", "grayscale=true", "frame_stack=2"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "40 steps" in out.stdout
    buf = read_buffer(tmp_path / "b.npz")
    assert buf["obs"].shape == (40, 2, 24, 36)
    d = RLDomain(data={"path": str(tmp_path / "b.npz")})
    assert len(d.dataset("train")) + len(d.dataset("test")) == 40 and d.layout == "chw"


@pytest.mark.parametrize("args, message", [(["env=CartPole-v1", "steps=5"], "out=<file.npz> is required"),
                                           (["colour=red", "out=x.npz"], "unknown argument 'colour=red'"),
                                           (["env=NoSuchEnv-v0", "out=x.npz"], "cannot make env NoSuchEnv-v0"),
                                           (["steps=0", "out=x.npz"], "steps=0 must be at least 1"),
                                           (["pixels=false", "frame_stack=4", "out=x.npz"], "neither stacked nor skipped")])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as out:
        main(args)
    stderr = capsys.readouterr().err
    assert out.value.code == 2 and message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "x.npz").exists()


def test_the_public_entry_points_are_the_moved_code():
    import multissl.collect
    assert (multissl.collect.collect, multissl.collect.make_env, multissl.collect.main) == (collect, make_env, main)


def test_frame_skip_repeats_each_action_in_classic_control():
    b = collect("CartPole-v1", 4, seed=3, size=[24, 36], frame_skip=3, policy=lambda obs: 1)
    env = gym.make("CartPole-v1")
    s, _ = env.reset(seed=3)
    want = [s]
    for _ in range(3):
        for _ in range(3):  # one stored step = the action repeated 3 times
            s, *_ = env.step(1)
        want.append(s)
    np.testing.assert_allclose(b["state"], np.stack(want), rtol=1e-6)
    assert b["reward"][0] == 3.0
