"""Buffers on disk are memory-mapped, never read whole: a .npz (compressed or not, copied once into the cache) and a
folder of .npy train the same views as the same arrays in memory; the copy is reused until its file changes; what
goes to loader workers holds paths, not observations; value checks and statistics read a bounded sample of steps."""
import json
import os
import pickle
import tracemalloc

import numpy as np
import pytest
import torch

from multissl.data import Views, sample_views
from multissl.domains.rl import RLDomain, read_buffer
from multissl.domains.rl.buffer import evenly_spread
from multissl.domains.rl.mmap import MANIFEST
from multissl.errors import UserError


@pytest.fixture(autouse=True)
def copies(tmp_path, monkeypatch):
    """Where .npz buffers are copied to (a cache of this test's own)."""
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "rl" / "mapped"


def buffer(obs, seed=0, **extra) -> dict:
    """A buffer of episodes of 25 steps (the last one cut by a time limit) around `obs`, with actions, the true state
    and the env's settings."""
    n, rng = len(obs), np.random.default_rng(seed)
    term, trunc = np.zeros(n, bool), np.zeros(n, bool)
    term[24::25], trunc[-1] = True, True
    return {"obs": obs, "action": rng.integers(0, 3, n), "reward": rng.normal(size=n).astype(np.float32),
            "terminated": term, "truncated": trunc, "state": rng.normal(size=(n, 2)),
            "state_names": np.array(["x", "v"]), "env_config": np.array(json.dumps({"env": "CartPole-v1"})), **extra}


def write(form: str, root, arrays: dict):
    """The buffer as `form`: an .npz (numpy.savez or savez_compressed) or a folder of .npy, one per key."""
    if form == "folder":
        (root / "b").mkdir()
        for k, v in arrays.items():
            np.save(root / "b" / f"{k}.npy", v)
        return root / "b"
    (np.savez_compressed if form == "compressed" else np.savez)(root / "b.npz", **arrays)
    return root / "b.npz"


@pytest.mark.parametrize("form", ["npz", "compressed", "folder"])
def test_buffers_on_disk_train_the_same_views_as_in_memory(tmp_path, form, frames):
    arrays = buffer(frames(80, (3, 20, 24)))
    path = str(write(form, tmp_path, arrays))
    mem, disk = (RLDomain(data={"path": p}, temporal_offset=[1, 2]) for p in (arrays, path))
    train = disk.dataset("train")
    assert torch.equal(train.index, mem.dataset("train").index) and disk.state() == mem.state()
    assert isinstance(disk._buf["obs"], np.memmap) and not isinstance(mem._buf["obs"], np.memmap)
    for i in range(0, len(train), 7):
        x = train[i]["x"]
        a, b = (d.draw(x, torch.Generator().manual_seed(i), 2, 2) for d in (mem, disk))  # views, then 2 future steps
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert all(torch.equal(u, v) for u, v in zip(sample_views(mem, a), sample_views(disk, b)))
        assert torch.equal(mem.eval_input(x), disk.eval_input(x)) and torch.equal(mem.eval_raw(x), disk.eval_raw(x))

    def embed(steps):  # the true state: a probe with something to read
        return torch.from_numpy(arrays["state"][steps.index.numpy()]).float()
    assert disk.downstream_metrics(embed) == mem.downstream_metrics(embed)


def test_a_npz_is_copied_once_and_again_when_it_changes(tmp_path, copies, frames):
    arrays = buffer(frames(50, (3, 20, 24)))
    path = write("npz", tmp_path, arrays)
    read_buffer(path)
    (copy,) = copies.iterdir()
    written = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in copy.iterdir()}
    assert read_buffer(path)["obs"].filename == copy / "obs.npy"
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in copy.iterdir()} == written  # reused as it is
    (copy / MANIFEST).unlink()  # a copy whose writer was killed before it finished
    (copy / "obs.npy").unlink()
    assert np.array_equal(read_buffer(path)["obs"], arrays["obs"]) and (copy / MANIFEST).exists()
    stat = path.stat()
    np.savez(path, **{**arrays, "reward": arrays["reward"] + 1})  # the same size: told apart by the time
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert np.array_equal(read_buffer(path)["reward"], arrays["reward"] + 1)
    assert [p.name for p in copies.iterdir()] != [copy.name] and len(list(copies.iterdir())) == 1  # the stale one gone


def test_what_goes_to_loader_workers_holds_paths_not_observations(tmp_path, frames):
    arrays = buffer(frames(2000, (3, 24, 32)))
    d = RLDomain(data={"path": str(write("npz", tmp_path, arrays))})
    views = Views(d.dataset("train"), d, seed=0, n_global=2)
    blob = pickle.dumps(views)  # what spawn sends each loader worker: the domain's statistics, per-step bounds, paths
    train = d.dataset("train")
    assert len(blob) < arrays["obs"].nbytes / 20 and len(pickle.dumps(train)) < 8 * len(train) + 4096  # its index
    back = pickle.loads(blob)
    assert isinstance(back.domain._buf["obs"], np.memmap) and back.domain.state() == d.state()
    assert np.array_equal(back.domain._buf["terminated"], arrays["terminated"])  # cast to bool: sent as values
    a, b = views[5]["drawn"], back[5]["drawn"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_folder_buffer_is_read_at_bounded_memory(tmp_path):
    n, dim = 1 << 17, 1024  # 256 MiB of float16 observations, a sparse file: only the rows read are paged in
    arrays = buffer(np.zeros((n, 0)))
    (tmp_path / "b").mkdir()
    obs = np.lib.format.open_memmap(tmp_path / "b" / "obs.npy", "w+", np.float16, (n, dim))
    del obs
    for k, v in arrays.items():
        if k != "obs":
            np.save(tmp_path / "b" / f"{k}.npy", v)
    tracemalloc.start()
    try:
        d = RLDomain(data={"path": str(tmp_path / "b")})
        d.eval_input(d.dataset("test")[0]["x"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert d.obs_shape == [dim] and peak < n * dim * 2 / 8  # a whole-array check alone would allocate n * dim bools


def test_a_npz_is_copied_in_chunks(tmp_path):
    n = 1 << 15
    path = write("npz", tmp_path, buffer(np.zeros((n, 1024), np.float16)))  # 64 MiB of observations
    tracemalloc.start()
    try:
        obs = read_buffer(path)["obs"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(obs, np.memmap) and peak < obs.nbytes / 4


def test_observations_on_disk_are_checked_on_the_steps_statistics_read(tmp_path):
    n = 5000
    obs = np.zeros((n, 3), np.float32)
    unread = next(i for i in range(n) if i not in set(evenly_spread(n)))
    obs[unread] = np.nan
    folder = write("folder", tmp_path, buffer(obs))
    assert np.isnan(read_buffer(folder)["obs"][unread]).all()  # a NaN between the sampled steps is not looked for
    with pytest.raises(UserError, match=rf"'obs' holds NaN or Inf \(first at step {unread}\)"):
        read_buffer(buffer(obs))  # in memory every step is checked
    np.save(folder / "obs.npy", np.where(np.arange(n)[:, None] == n - 1, np.inf, obs))
    with pytest.raises(UserError, match=rf"replay buffer .*: 'obs' holds NaN or Inf \(first at step {n - 1}\)"):
        read_buffer(folder)


def test_folder_buffers_choose_their_encoder_and_refuse_what_they_cannot_map(tmp_path, frames):
    vectors = write("folder", tmp_path, buffer(np.zeros((30, 4), np.float32)))
    assert RLDomain.default_encoder({"path": str(vectors)}) is None  # the configured default, as for a .npz
    (tmp_path / "f").mkdir()
    np.save(tmp_path / "f" / "obs.npy", frames(30, (3, 20, 24)))
    assert RLDomain.default_encoder({"path": str(tmp_path / "f")})[0] == "nature_cnn"
    with pytest.raises(UserError, match=r"holds one array; a replay buffer is a .npz or a folder of .npy arrays"):
        read_buffer(vectors / "obs.npy")
    np.save(vectors / "action.npy", np.array([{"a": 1}] * 30, dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match=r"'action' holds Python objects .*no Python objects") as e:
        read_buffer(vectors)
    assert "\n" not in str(e.value)
