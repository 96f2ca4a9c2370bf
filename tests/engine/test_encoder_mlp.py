"""encoder=mlp: domain tokens flattened into an MLP. Trains with the tabular and the image domain, exports,
refuses masked objectives, and computes exactly embedder -> flatten -> Linear-BN-ReLU layers -> Linear."""
import math

import pytest
import torch

import multissl
from multissl.domains.tabular import TabularDomain
from multissl.encoder import MLPEncoder
from multissl.errors import UserError
from multissl.train import run

MLP = ("encoder=mlp", "encoder.dim=16", "encoder.hidden=[32]", "encoder.token_dim=4")


@pytest.mark.parametrize("domain", ["tabular", "image"])
def test_mlp_trains_two_steps_and_exports(tiny, domain):
    folder = tiny.run(*MLP, f"domain={domain}", "objective=simclr", "trainer.max_steps=2", tiny_encoder=False)
    rows = tiny.metrics(folder)
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert sorted(losses) == [1, 2] and all(math.isfinite(v) for v in losses.values())
    assert 0.0 <= rows[-1]["knn_acc"] <= 1.0
    enc = multissl.load_encoder(folder)
    tabular = domain == "tabular"
    raw = enc.domain.dataset("test").frame.head(3) if tabular else torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    out = enc.embed(raw)
    assert out.shape == (3, 16) and torch.isfinite(out).all()


def test_mlp_refuses_a_masked_objective(tiny):
    with pytest.raises(UserError, match="objective=mae masks tokens but encoder=mlp has none") as e:
        run(tiny.config(*MLP, "domain=tabular", "objective=mae", "trainer.max_steps=1", tiny_encoder=False))
    assert "\n" not in str(e.value) and not (tiny.root / "run").exists()


def test_mlp_forward_is_embedder_flatten_then_layers():
    d = TabularDomain(data={"name": "iris"})
    x = d.dataset("train").x[:5]
    torch.manual_seed(0)
    enc = MLPEncoder(d, dim=3, hidden=[6], token_dim=2).eval()
    tokens, rep = enc(x)
    assert tokens is None and rep.shape == (5, 3)
    lin1, bn, _, lin2 = enc.mlp  # Linear (no bias, BN follows) - BN - ReLU - Linear
    h = enc.embed(x).reshape(5, 4 * 2) @ lin1.weight.T  # 4 features x token_dim 2
    h = (h - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * bn.weight + bn.bias
    torch.testing.assert_close(rep, h.clamp_min(0) @ lin2.weight.T + lin2.bias)
    with pytest.raises(UserError, match="encoder=mlp has no tokens to mask"):
        enc(x, keep=torch.zeros(5, 2, dtype=torch.long))
