"""encoder=convnet: the small conv net trains every parameter in a step on images and on clips ((2+1)-D blocks, the
frames kept), in float32 and bf16; masked objectives refuse it in one line; its representation is the global average
of the last block."""
import pytest
import torch

from multissl.cli import load_config
from multissl.errors import UserError
from multissl.testing import check_step
from multissl.train import build_domain, build_models, run

from tiny import TINY, domain_data

SMALL = ("encoder=convnet", "encoder.widths=[8,16]", "data.batch_size=8")


def config(*args):
    return load_config([*SMALL, *TINY, *domain_data(list(args)), *args])


@pytest.mark.parametrize("domain, objective", [("image", "simclr"), ("image", "byol"), ("video", "vicreg")])
def test_one_step_trains_every_parameter(domain, objective):
    cfg = config(f"domain={domain}", f"objective={objective}", "data.batch_size=8")
    checked = check_step(cfg, build_domain(cfg))
    assert checked["parameters"] > 0


def test_clips_keep_their_frames_through_every_block():
    cfg = config("domain=video", "objective=simclr")
    d = build_domain(cfg)
    enc = build_models(cfg, d)[0].eval()
    x = torch.stack([d.eval_input(d.dataset("train")[i]["x"]) for i in range(2)])  # [b c t h w]
    h = x
    for layer in enc.net:
        h = layer(h)
        assert h.shape[2] == x.shape[2]  # frames kept, only the side is pooled
    _, pooled = enc(x)
    torch.testing.assert_close(pooled, h.flatten(2).mean(2))


def test_masked_objectives_refuse_it_in_one_line(tmp_path):
    cfg = config("domain=image", "objective=mae", f"run.dir={tmp_path / 'run'}", "trainer.max_steps=1")
    with pytest.raises(UserError) as e:
        run(cfg)
    assert "\n" not in str(e.value) and "convnet" in str(e.value)
