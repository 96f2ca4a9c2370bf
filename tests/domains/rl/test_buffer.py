"""The rl buffer format: layouts, bad buffers (through the domain and the train CLI), episode boundaries
(truncated ones too), and the default buffer's cache."""
import numpy as np
import torch
import pytest

from multissl.domains.rl import RLDomain
from multissl.domains.rl.buffer import REQUIRED, detect_layout, episode_bounds
from multissl.errors import UserError
from multissl.train import main


# ---- layouts ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, layout", [((4,), "vector"), ((84, 84), "hw"), ((64, 96, 3), "hwc"),
                                           ((84, 84, 4), "hwc"), ((4, 84, 84), "chw"), ((3, 48, 72), "chw"),
                                           ((2, 48, 72, 3), "khwc")])
def test_layout_is_detected(shape, layout):
    assert detect_layout(shape) == layout


@pytest.mark.parametrize("shape", [(3, 3, 3), (2, 3, 48, 72, 3), (40, 40, 40)])
def test_undetectable_layout_names_the_key_to_set(shape):
    with pytest.raises(UserError, match=r"set domain.layout="):
        detect_layout(shape)


# ---- bad buffers ----------------------------------------------------------------------------------------------
GOOD = dict(obs=np.zeros((10, 4), np.float32), action=np.zeros(10), reward=np.zeros(10), terminated=np.zeros(10, bool),
            truncated=np.zeros(10, bool))


@pytest.mark.parametrize("key", REQUIRED)
def test_missing_key_is_named(tmp_path, key, domain_on):
    np.savez(tmp_path / "b.npz", **{k: v for k, v in GOOD.items() if k != key})
    with pytest.raises(UserError, match=rf"has no '{key}' array \(it has: .*\); the format needs") as e:
        domain_on(tmp_path / "b.npz")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("key", ["action", "reward", "terminated", "truncated", "state", "episode"])
def test_length_mismatch_is_named(tmp_path, key, domain_on):
    arrays = {**GOOD, "state": np.zeros((10, 2)), "episode": np.zeros(10, np.int64)}
    arrays[key] = arrays[key][:7]
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(UserError, match=rf"'{key}' has 7 steps but 'obs' has 10"):
        domain_on(tmp_path / "b.npz")


@pytest.mark.parametrize("arrays, message", [
    ({**GOOD, "obs": np.zeros((0, 4), np.float32)}, r"is empty \(obs holds 0 steps\)"),
    ({**GOOD, "terminated": np.full(10, 2)}, r"'terminated' must be booleans"),
    ({**GOOD, "obs": np.full((10, 4), np.nan, np.float32)}, r"'obs' holds NaN or Inf \(first at step 0\)"),
    ({**GOOD, "state": np.array([[0.0]] * 9 + [[np.inf]])}, r"'state' holds NaN or Inf \(first at step 9\)"),
    ({**GOOD, "obs": np.array(["a"] * 10)}, r"observations must be numbers"),
])
def test_bad_buffer_contents(tmp_path, arrays, message, domain_on):
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(UserError, match=message):
        domain_on(tmp_path / "b.npz")


@pytest.mark.parametrize("arrays, message", [
    ({**GOOD, "action": np.array(["left", "right"] * 5)}, r"'action' holds <U5 values such as 'left'; actions must be "
                                                          r"numbers: integer ids 0..n-1 .*numpy.unique"),
    ({**GOOD, "action": np.array([0, 1, 2, -1, 0, 1, 2, 0, 1, 2])}, r"'action' holds integer action ids and -1 "
                                                                    r"\(step 3\) is negative; .*shift them"),
    ({**GOOD, "action": np.array([0, 70000] * 5)}, r"'action' holds integer action ids up to 70000; .*renumber them"),
    ({**GOOD, "action": np.array([[0.5, 1.0]] * 6 + [[np.nan, 0.0]] + [[0.0, 0.0]] * 3)},
     r"'action' holds NaN or Inf \(first at step 6\); actions must be finite numbers"),
    ({**GOOD, "action": np.zeros((10, 0))}, r"'action' is shaped \[10, 0\], no value per step"),
    ({**GOOD, "reward": np.array([1.0] * 9 + [np.nan])}, r"'reward' holds NaN or Inf \(first at step 9\); rewards "
                                                         r"must be finite numbers: clean those steps"),
    ({**GOOD, "reward": np.array(["1"] * 10)}, r"'reward' holds <U1 values such as '1'; rewards must be numbers"),
    ({**GOOD, "reward": np.zeros((10, 2))}, r"'reward' is shaped \[10, 2\]; it needs one value per step"),
    ({**GOOD, "episode": np.repeat([0.0, 0.5], 5)}, r"'episode' holds float64 values such as 0\.5; episode ids must "
                                                    r"be integers.*number the episodes"),
    ({**GOOD, "episode": np.array(["ep1"] * 10)}, r"'episode' holds <U3 values such as 'ep1'; episode ids must be "
                                                  r"integers"),
    ({**GOOD, "truncated": np.array([0.0] * 5 + [0.5] * 5)},
     r"'truncated' must be booleans \(or 0/1\), one per step; it holds float64 values such as 0\.5: save it as a bool"),
    ({**GOOD, "terminated": np.array(["no"] * 10)}, r"'terminated' must be booleans.*values such as 'no'"),
])
def test_bad_actions_rewards_episodes_and_flags_name_the_array_in_one_line(tmp_path, arrays, message, domain_on):
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(UserError, match=rf"replay buffer .*b\.npz: {message}") as e:
        domain_on(tmp_path / "b.npz")
    assert "\n" not in str(e.value)


def test_buffers_it_accepts_train_spr(tiny, tmp_path):
    """What the checks let through as the format allows it — whole-number float episode ids, [N 1] rewards and
    flags, 0/1 float flags — trains SPR with discrete, boolean and continuous actions."""
    n, rng = 48, np.random.default_rng(0)
    obs, episode = rng.normal(size=(n, 4)).astype(np.float32), np.repeat(np.arange(4.0), n // 4)
    for i, action in enumerate([rng.integers(0, 3, n), rng.random(n) < 0.5, rng.normal(size=(n, 2))]):
        path = tmp_path / f"b{i}.npz"
        np.savez(path, obs=obs, action=action, episode=episode, reward=np.ones((n, 1)), terminated=np.zeros((n, 1)),
                 truncated=np.zeros(n, np.float32))
        folder = tiny.run("domain=rl", "objective=spr", "encoder=mlp", f"data.path={path}", "trainer.max_steps=1",
                          "data.batch_size=16", "domain.test_fraction=0", name=f"r{i}", tiny_encoder=False)
        assert any("loss" in r for r in tiny.metrics(folder))


def test_negative_actions_stop_spr_with_one_line(tmp_path, monkeypatch, capsys):
    np.savez(tmp_path / "b.npz", **{**GOOD, "action": -np.ones(10, np.int64)})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as out:
        main(["domain=rl", "objective=spr", f"data.path={tmp_path / 'b.npz'}", f"run.dir={tmp_path / 'run'}"])
    stderr = capsys.readouterr().err
    assert out.value.code == 2 and len(stderr.strip().splitlines()) == 1 and "'action'" in stderr


def test_unreadable_or_wrong_files(tmp_path, domain_on):
    (tmp_path / "b.txt").write_text("obs")
    with pytest.raises(UserError, match="is not a replay buffer"):
        domain_on(tmp_path / "b.txt")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read replay buffer"):
        domain_on(tmp_path / "c.npz")
    for key in ("obs", "action"):  # saved with allow_pickle: refused, not unpickled, naming the array
        np.savez(tmp_path / "o.npz", **{**GOOD, key: np.array([{"a": 1}] * 10, dtype=object)})
        with pytest.raises(UserError, match=rf"cannot read replay buffer .*: '{key}' holds Python objects .*no Python "
                                            r"objects") as e:
            domain_on(tmp_path / "o.npz")
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="reads one replay buffer file"):
        domain_on(tmp_path)


def test_bad_buffer_exits_2_with_one_line_and_keeps_checkpoints(tmp_path, monkeypatch, capsys):
    np.savez(tmp_path / "b.npz", **{k: v for k, v in GOOD.items() if k != "reward"})
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000001.pt"
    torch.save({"step": 1, "domain": None}, ckpt)  # a run resumed onto a buffer that lost an array
    kept = ckpt.read_bytes()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as out:  # the CLI's main in-process; tests/engine run `python -m` itself
        main(["domain=rl", "objective=spr", f"data.path={tmp_path / 'b.npz'}", f"run.dir={tmp_path / 'run'}"])
    stderr = capsys.readouterr().err
    assert out.value.code == 2 and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and "'reward'" in stderr
    assert ckpt.read_bytes() == kept


# ---- episodes -----------------------------------------------------------------------------------------------
def test_episode_bounds_from_flags_ids_and_buffer_end():
    term = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0], bool)  # episode 0 ends at 2 (terminated)
    trunc = np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 0], bool)  # episode 1 ends at 4 (truncated: a time limit)
    ids = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 3])  # a new id at 7 without a flag is a boundary too
    seg, first, last = episode_bounds(term, trunc, ids)
    assert seg.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]  # the last episode runs to the end of the buffer
    assert first.tolist() == [0, 0, 0, 3, 3, 5, 5, 7, 7, 7]
    assert last.tolist() == [2, 2, 2, 4, 4, 6, 6, 9, 9, 9]


def test_default_buffer_is_collected_once_and_a_damaged_cache_again(tmp_path, capsys):
    small = {"steps": 40, "size": [24, 36]}
    d = RLDomain(default=small, cache_dir=str(tmp_path))
    d.dataset("train")
    (cached,) = list(tmp_path.glob("*.npz"))
    assert d.obs_shape == [3, 24, 36] and d.state_names[0] == "cart_position" and "collecting" in capsys.readouterr().err
    RLDomain(default=small, cache_dir=str(tmp_path)).dataset("train")
    assert "collecting" not in capsys.readouterr().err  # read from the cache
    cached.write_bytes(b"damaged")
    again = RLDomain(default=small, cache_dir=str(tmp_path))
    again.dataset("train")
    assert "collecting the default buffer again" in capsys.readouterr().err
    assert np.array_equal(again._buf["obs"], d._buf["obs"])  # the same seeded collection
