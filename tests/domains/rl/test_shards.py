"""rl shards (form "buffer", domains/rl/mmap.py): a buffer written as blocks of steps reads back as the arrays its file
gives, is streamed into the cache once, trains as the buffer does, and shards of another domain are refused."""
import json

import numpy as np
import pytest

from multissl.domains.rl import mmap
from multissl.domains.rl.domain import RLDomain, read_data
from multissl.domains.shards import Shards
from multissl.errors import UserError
from multissl.shards import convert

from tiny import write_image_shards


def final(folder, tiny) -> tuple[list, dict]:
    rows = tiny.metrics(folder)
    return [r["loss"] for r in rows if "loss" in r], {k: v for k, v in rows[-1].items() if k != "time"}


def test_shards_read_back_as_the_buffer_once_and_refuse_another_domain(tmp_path, monkeypatch, frames, write_buffer):
    g, n = np.random.default_rng(0), 150
    path = write_buffer(tmp_path / "b.npz", frames(n, (4, 20, 24)), ends=list(range(29, n, 30)),
                        state=g.normal(size=(n, 2)), episode=np.arange(n) // 30, state_names=np.array(["x", "v"]),
                        env_config=np.array(json.dumps({"env": "CartPole-v1"})))
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mmap, "BLOCK_STEPS", 64)  # three blocks, the last one short
    convert(str(path), str(tmp_path / "shards"), ["domain=rl"])
    shards = Shards(tmp_path / "shards", "rl")
    assert shards.form == "buffer" and shards.splits == ["train"] and shards.count("train") == 3
    assert RLDomain.default_encoder({"path": str(tmp_path / "shards")})[0] == "nature_cnn"  # frames
    want, got = read_data(str(path)), read_data(str(tmp_path / "shards"))
    assert sorted(got) == sorted(want) and isinstance(got["obs"], np.memmap)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape and np.array_equal(got[k], want[k]), k

    def again(*args):
        raise AssertionError("the shards were converted twice")
    monkeypatch.setattr(mmap, "unpack", again)
    assert np.array_equal(read_data(str(tmp_path / "shards"))["obs"], want["obs"])

    with pytest.raises(UserError, match="holds shards of the image domain; train them with domain=image"):
        read_data(str(write_image_shards(tmp_path / "images")))


def test_a_run_from_shards_is_the_run_from_the_buffer(tiny, tmp_path, monkeypatch, write_buffer):
    obs = np.random.default_rng(0).normal(size=(96, 4)).astype(np.float32)
    path = write_buffer(tmp_path / "b.npz", obs, ends=list(range(11, 96, 12)), state=obs[:, :2] * 2)
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mmap, "BLOCK_STEPS", 40)
    convert(str(path), str(tmp_path / "shards"), ["domain=rl"])
    assert RLDomain.default_encoder({"path": str(tmp_path / "shards")}) is None  # vectors, told from the meta
    args = ("domain=rl", "trainer.max_steps=3", "data.batch_size=16")
    buffer = tiny.run(*args, f"data.path={path}", name="buffer")
    from_shards = tiny.run(*args, f"data.path={tmp_path / 'shards'}", name="shards")
    assert final(from_shards, tiny) == final(buffer, tiny)  # every loss, and the state probe, kNN and spectra
    assert "state_r2_mean" in final(buffer, tiny)[1]
