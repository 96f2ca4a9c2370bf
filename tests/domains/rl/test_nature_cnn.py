"""encoder=nature_cnn: trains on frame stacks, exports, and refuses what it cannot read."""
import numpy as np
import pytest

import multissl
from multissl.errors import UserError
from multissl.train import run


def test_nature_cnn_trains_on_frame_stacks_and_refuses_what_it_cannot_read(tiny, tmp_path, frames, write_buffer):
    stacks = write_buffer(tmp_path / "s.npz", frames(60, (4, 44, 44)), ends=[19, 39])
    folder = tiny.run("domain=rl", "objective=byol", "encoder=nature_cnn", "encoder.dim=32", f"data.path={stacks}",
                      "trainer.max_steps=2", "data.batch_size=16", tiny_encoder=False)
    enc = multissl.load_encoder(folder)
    assert enc.embed(frames(3, (4, 44, 44))).shape == (3, 32)
    vectors = write_buffer(tmp_path / "v.npz", np.zeros((20, 4), np.float32), ends=[9])
    with pytest.raises(UserError, match="encoder=nature_cnn reads frames.*use encoder=mlp"):
        run(tiny.config("domain=rl", "encoder=nature_cnn", f"data.path={vectors}", "trainer.max_steps=1",
                        tiny_encoder=False, name="refused1"))
    small = write_buffer(tmp_path / "t.npz", frames(20, (4, 20, 24)), ends=[9])
    with pytest.raises(UserError, match="at least 36x36"):
        run(tiny.config("domain=rl", "encoder=nature_cnn", f"data.path={small}", "trainer.max_steps=1",
                        tiny_encoder=False, name="refused2"))
    with pytest.raises(UserError, match="objective=mae masks tokens but encoder=nature_cnn"):
        run(tiny.config("domain=rl", "encoder=nature_cnn", "objective=mae", "trainer.max_steps=1", tiny_encoder=False,
                        name="refused3"))
