"""Other formats of RL data (domains/rl/formats.py): Minari datasets, written here with Minari's own API, read episode
by episode into the buffer format and memory-mapped from their cached conversion; stable-baselines3's pickled replay
buffers refused without being unpickled, and the export the docs give for them."""
import json
import pickle
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

gymnasium = pytest.importorskip("gymnasium")
minari = pytest.importorskip("minari")
from gymnasium import spaces  # noqa: E402
from minari.data_collector.episode_buffer import EpisodeBuffer  # noqa: E402

from multissl.domains.rl import RLDomain, episode_bounds, formats  # noqa: E402
from multissl.domains.rl.buffer import read_buffer  # noqa: E402
from multissl.errors import UserError  # noqa: E402

DOCS = Path(__file__).parents[3] / "docs" / "domains" / "rl.md"


def cartpole_episodes(n: int, seed: int) -> list[dict]:
    """n CartPole episodes of a random policy, at most 12 steps each, as the env gave them: obs [T+1 4] (from the
    reset to the observation after the last step), action, reward, terminated, truncated [T]."""
    env, rng, episodes = gymnasium.make("CartPole-v1", max_episode_steps=12), np.random.default_rng(seed), []
    for i in range(n):
        ep, done = {"obs": [env.reset(seed=seed * 100 + i)[0]], "action": [], "reward": [], "terminated": [],
                    "truncated": []}, False
        while not done:
            ep["action"].append(int(rng.integers(2)))
            obs, reward, terminated, truncated, _ = env.step(ep["action"][-1])
            for k, v in zip(("obs", "reward", "terminated", "truncated"), (obs, reward, terminated, truncated)):
                ep[k].append(v)
            done = terminated or truncated
        episodes.append({k: np.array(v) for k, v in ep.items()})
    return episodes


def write_dataset(dataset_id: str, episodes: list[dict], data_format: str = "hdf5", **env_or_spaces):
    """Minari's create_dataset_from_buffers (its DataCollector needs jax) into $MINARI_DATASETS_PATH."""
    buffers = [EpisodeBuffer(id=i, observations=e["obs"], actions=e["action"], rewards=e["reward"],
                             terminations=e["terminated"], truncations=e["truncated"]) for i, e in enumerate(episodes)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it asks for an author, a description, an eval env
        minari.create_dataset_from_buffers(dataset_id, buffers, data_format=data_format, **env_or_spaces)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A Minari root with CartPole in both of Minari's formats (6 episodes, some terminated, some cut at 12 steps) and a
    dataset of dict observations with a tuple inside and Discrete(3, start=-1) actions."""
    path, episodes = tmp_path_factory.mktemp("minari"), cartpole_episodes(6, 0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(path))
        for data_format in ("hdf5", "arrow"):
            write_dataset(f"test/cartpole/{data_format}-v0", episodes, data_format,
                          env=gymnasium.make("CartPole-v1", max_episode_steps=12))
        rng = np.random.default_rng(1)
        dict_episodes = [{"obs": {"observation": rng.normal(size=(t + 1, 3)).astype(np.float32),
                                  "goal": (rng.normal(size=(t + 1, 2)).astype(np.float32),
                                           rng.normal(size=(t + 1, 1)).astype(np.float32))},
                          "action": rng.integers(-1, 2, t), "reward": np.zeros(t), "terminated": np.arange(t) == t - 1,
                          "truncated": np.zeros(t, bool)} for t in (5, 7)]
        box = [spaces.Box(-10, 10, (d,), np.float32) for d in (0, 1, 2, 3)]
        write_dataset("test/dict-v0", dict_episodes, observation_space=spaces.Dict(
            {"observation": box[3], "goal": spaces.Tuple((box[2], box[1]))}), action_space=spaces.Discrete(3, start=-1))
    return path, episodes, dict_episodes


@pytest.fixture(autouse=True)
def _minari_root(root, monkeypatch, tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root[0]))
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "cache"))


# ---- Minari -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data_format", ["hdf5", "arrow"])
def test_each_step_is_the_observation_its_action_was_taken_on_in_its_episode(root, data_format):
    episodes = root[1]
    buf = formats.read_minari(f"minari:test/cartpole/{data_format}-v0")
    lengths = [len(e["action"]) for e in episodes]
    assert len(buf["obs"]) == sum(lengths) and isinstance(buf["obs"], np.memmap)
    # the observation after an episode's last step is dropped: step t holds the observation action t was taken on
    np.testing.assert_array_equal(buf["obs"], np.concatenate([e["obs"][:-1] for e in episodes]))
    for k in ("action", "reward", "terminated", "truncated"):
        np.testing.assert_array_equal(buf[k], np.concatenate([e[k] for e in episodes]))
    assert buf["terminated"].any() and buf["truncated"].any()  # both ends occur, so both flags are checked
    np.testing.assert_array_equal(buf["episode"], np.repeat(np.arange(6), lengths))
    _, first, last = episode_bounds(buf["terminated"], buf["truncated"], buf["episode"])
    starts = np.cumsum([0, *lengths])
    np.testing.assert_array_equal(first, np.repeat(starts[:-1], lengths))
    np.testing.assert_array_equal(last, np.repeat(starts[1:] - 1, lengths))
    # the dataset's folder (or its data/ folder) reads the same
    folder = root[0] / "test" / "cartpole" / f"{data_format}-v0"
    for path in (folder, folder / "data"):
        assert formats.is_minari(path)
        np.testing.assert_array_equal(formats.read_format(path)["obs"], buf["obs"])
    assert formats.minari_obs_shape(f"minari:test/cartpole/{data_format}-v0") == (4,)


def test_a_conversion_is_reused_and_made_again_when_the_dataset_changes(root, tmp_path, monkeypatch):
    write_dataset("test/changing-v0", cartpole_episodes(2, 3), env=gymnasium.make("CartPole-v1"))
    first = np.array(formats.read_minari("minari:test/changing-v0")["obs"])
    (old,) = (tmp_path / "cache" / "rl" / "minari").glob("test_changing-v0-*")
    with monkeypatch.context() as mp:
        mp.setattr(formats, "convert", lambda *a: pytest.fail("converted again"))
        np.testing.assert_array_equal(formats.read_minari("minari:test/changing-v0")["obs"], first)
    shutil.rmtree(root[0] / "test" / "changing-v0")
    episodes = cartpole_episodes(2, 4)
    write_dataset("test/changing-v0", episodes, env=gymnasium.make("CartPole-v1"))
    again = formats.read_minari("minari:test/changing-v0")["obs"]
    np.testing.assert_array_equal(again, np.concatenate([e["obs"][:-1] for e in episodes]))
    assert not old.exists()  # the stale copy of the observations is removed


def test_dict_and_tuple_observations_are_read_one_named_part_at_a_time(root):
    episodes = root[2]
    with pytest.raises(UserError, match=r"dict \(keys: goal, observation\) observations; name the part .*'#' in "
                                        r"data.path, e.g. minari:<id>#goal/0$") as e:
        formats.read_minari("minari:test/dict-v0")
    assert "\n" not in str(e.value)
    buf = formats.read_minari("minari:test/dict-v0#goal/1")
    np.testing.assert_array_equal(buf["obs"], np.concatenate([e["obs"]["goal"][1][:-1] for e in episodes]))
    np.testing.assert_array_equal(formats.read_minari("minari:test/dict-v0", obs_key="observation")["obs"],
                                  np.concatenate([e["obs"]["observation"][:-1] for e in episodes]))
    # Discrete(3, start=-1): ids -1..1 are read as 0..2, as the buffer's action ids start at 0
    np.testing.assert_array_equal(buf["action"], np.concatenate([e["action"] for e in episodes]) + 1)
    assert formats.minari_obs_shape("minari:test/dict-v0#goal/1") == (1,)
    assert formats.minari_obs_shape("minari:test/dict-v0") is None
    with pytest.raises(UserError, match=r"have no part 'goal/2' \(dict \(keys: goal, observation\)\)"):
        formats.read_minari("minari:test/dict-v0#goal/2")
    with pytest.raises(UserError, match=r"tuple \(parts 0..1\) observations; .* e.g. minari:<id>#goal/0$"):
        formats.read_minari("minari:test/dict-v0#goal")


def test_a_dataset_not_in_the_local_root_is_named_and_never_downloaded(monkeypatch):
    monkeypatch.setattr(minari.storage.hosting, "download_dataset", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(UserError, match=r"Minari dataset D4RL/door/human-v2 is not in the local Minari root .*"
                                        r"`minari download D4RL/door/human-v2`"):
        formats.read_format("minari:D4RL/door/human-v2")


def test_metadata_without_its_spaces_is_refused_before_minari_makes_the_env_it_names(root, tmp_path, monkeypatch):
    folder = shutil.copytree(root[0] / "test" / "cartpole" / "hdf5-v0", tmp_path / "copy")
    meta = json.loads((folder / "data" / "metadata.json").read_text())
    del meta["action_space"]  # Minari would make env_spec's env to learn it: env code named by the file
    (folder / "data" / "metadata.json").write_text(json.dumps(meta))
    monkeypatch.setattr(gymnasium, "make", lambda *a, **k: pytest.fail("made the env"))
    with pytest.raises(UserError, match="metadata.json has no action_space, and Minari would make the env"):
        formats.read_format(folder)


def damage(data: Path, what: str):
    """One kind of damage to a copied hdf5 dataset's data folder, as a broken write or a hand edit leaves it."""
    import h5py
    if what == "steps":
        meta = json.loads((data / "metadata.json").read_text())
        (data / "metadata.json").write_text(json.dumps({**meta, "total_steps": meta["total_steps"] + 5}))
        return
    with h5py.File(data / "main_data.hdf5", "a") as f:
        episode = f["episode_1"]
        if what == "episode":
            del f["episode_1"]
        elif what == "actions":
            actions = episode["actions"][:-1]
            del episode["actions"]
            episode["actions"] = actions
        else:
            obs = episode["observations"][()]
            del episode["observations"]
            episode["observations"] = np.zeros((len(obs), 5), obs.dtype)


@pytest.mark.parametrize("what, message", [
    ("steps", r"its metadata.json counts \d+ steps, its episodes hold \d+; the dataset is damaged"),
    ("episode", r"cannot read Minari dataset .*: .*; check it with `minari show`, or write it again"),
    ("actions", r"episode 1 holds (\d+) observations, \d+ actions and \d+ rewards; a Minari episode holds one "),
    ("shape", r"episode 1's observations are shaped \[5\], its observation space \[4\]"),
])
def test_a_damaged_dataset_stops_with_one_line(root, tmp_path, what, message):
    folder = shutil.copytree(root[0] / "test" / "cartpole" / "hdf5-v0", tmp_path / "copy")
    damage(folder / "data", what)
    with pytest.raises(UserError, match=message) as e:
        formats.read_minari(folder)
    assert "\n" not in str(e.value) and not list((tmp_path / "cache").rglob("obs.npy"))  # nothing half-written kept


@pytest.mark.parametrize("name, spaces_, message", [
    ("discrete-obs-v0", {"observation_space": spaces.Discrete(4), "action_space": spaces.Discrete(2)},
     "its observations are Discrete, not arrays of numbers"),
    ("dict-actions-v0", {"observation_space": spaces.Box(-1, 1, (2,)),
                         "action_space": spaces.Dict({"move": spaces.Discrete(2)})},
     r"its actions are dict \(keys: move\); the rl domain reads one array of actions per step"),
])
def test_observations_and_actions_that_are_no_arrays_are_refused(name, spaces_, message):
    obs = np.zeros(4, np.int64) if isinstance(spaces_["observation_space"], spaces.Discrete) else np.zeros((4, 2))
    action = np.zeros(3, np.int64) if isinstance(spaces_["action_space"], spaces.Discrete) else {"move": np.zeros(3)}
    episode = {"obs": obs, "action": action, "reward": np.zeros(3), "terminated": np.array([0, 0, 1], bool),
               "truncated": np.zeros(3, bool)}
    write_dataset(f"test/{name}", [episode], **spaces_)
    with pytest.raises(UserError, match=message):
        formats.read_minari(f"minari:test/{name}")


def test_minari_without_h5py_names_the_install_command(root, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # as where minari came without its hdf5 extra
    monkeypatch.delitem(sys.modules, "minari.dataset._storages.hdf5_storage", raising=False)
    with pytest.raises(UserError, match=r"reading Minari dataset test/cartpole/hdf5-v0: h5py is not installed; "
                                        r"install it with: pip install 'multissl\[rl\]'"):
        formats.read_minari("minari:test/cartpole/hdf5-v0")


# ---- stable-baselines3 ------------------------------------------------------------------------------------------
class Touch:
    """Unpickled, it creates `marker`: what a replay buffer from someone else could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("name", ["replay_buffer.pkl", "buffer.bin"])  # by its suffix, or by its first bytes
def test_a_pickle_is_refused_in_one_line_and_never_unpickled(tmp_path, name):
    marker, path = tmp_path / "unpickled", tmp_path / name
    path.write_bytes(pickle.dumps({"observations": Touch(marker)}, protocol=4))
    with pytest.raises(UserError, match=r"is a pickle .* export it to a .npz buffer with the five lines in "
                                        r"docs/domains/rl.md#stable-baselines3-replay-buffers$") as e:
        formats.read_format(path)
    assert "\n" not in str(e.value) and not marker.exists()
    assert formats.read_format(tmp_path / "missing.npz") is None  # not another format: read_buffer's to read


def test_the_documented_sb3_export_writes_the_buffer_oldest_step_first(tmp_path, monkeypatch):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.buffers import ReplayBuffer
    from stable_baselines3.common.save_util import save_to_pkl
    rb = ReplayBuffer(8, spaces.Box(-1, 20, (3,), np.float32), spaces.Discrete(4), device="cpu")
    for t in range(11):  # wraps around: steps 3..10 are kept, the oldest at rb.pos
        rb.add(np.full((1, 3), t, np.float32), np.full((1, 3), t + 1, np.float32), np.array([t % 4]),
               np.array([float(t)]), np.array([t in (3, 7, 9)]), [{"TimeLimit.truncated": t == 7}])
    monkeypatch.chdir(tmp_path)
    save_to_pkl("replay_buffer.pkl", rb)
    section = DOCS.read_text().split("### stable-baselines3 replay buffers", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    exec(code, {})  # noqa: S102  (the docs' own lines, run as a user runs them)
    buf = read_buffer(tmp_path / "buffer.npz")
    steps = np.arange(3, 11)
    np.testing.assert_array_equal(buf["obs"][:, 0], steps)
    np.testing.assert_array_equal(buf["action"], steps % 4)  # discrete: ids [N]
    np.testing.assert_array_equal(buf["reward"], steps)
    assert buf["terminated"].tolist() == [t in (3, 9) for t in steps]  # done without a time limit
    assert buf["truncated"].tolist() == [t == 7 for t in steps]


# ---- the rl domain ----------------------------------------------------------------------------------------------
def test_the_rl_domain_trains_on_a_minari_dataset_and_refuses_a_pickle(tiny, tmp_path):
    folder = tiny.run("domain=rl", "objective=byol", "data.path=minari:test/cartpole/hdf5-v0", "trainer.max_steps=1",
                      "data.batch_size=16")
    assert any("loss" in r for r in tiny.metrics(folder))
    assert OmegaConf.load(folder / "config.yaml").meta.encoder == "transformer"  # vectors: read from the metadata
    marker = tmp_path / "unpickled"
    (tmp_path / "replay_buffer.pkl").write_bytes(pickle.dumps(Touch(marker)))
    with pytest.raises(UserError, match="is a pickle"):
        RLDomain(data={"path": str(tmp_path / "replay_buffer.pkl")}).dataset("train")
    assert not marker.exists()
