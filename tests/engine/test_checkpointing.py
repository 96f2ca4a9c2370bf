"""encoder.checkpointing=true: a training step's gradients are those without it (dropout included: the recomputation
draws the same masks), each block runs again in the backward pass instead of keeping its activations, evaluation and
no_grad forwards take the usual path, and a run trains with it."""

import pytest
import torch
from torch import nn

import multissl
import multissl.encoder as encoder_module
from multissl.encoder import Encoder
from multissl.testing import TINY_ENCODER

LINES = [f"{w} number {i} is {'odd' if i % 2 else 'even'} and {w}s like it" for i, w in
         enumerate(["cat", "dog", "bird", "fish", "frog", "mouse", "horse", "sheep"] * 5)]


class Tokens:
    """A text-like domain for the transformer: ids [b n] -> learned embeddings [b n d]."""

    def embedder(self, dim: int) -> nn.Module:
        return nn.Embedding(50, dim)


def ids_and_padding() -> tuple[torch.Tensor, torch.Tensor]:
    """A variable-length batch: ids [4 9], pad [4 9] True past each sample's length."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([9, 3, 6, 1])
    return torch.randint(0, 50, (4, 9), generator=g), torch.arange(9) >= lengths[:, None]


def transformer(checkpointing: bool) -> Encoder:
    torch.manual_seed(0)
    return Encoder(Tokens(), dim=16, depth=3, heads=2, pool="mean", dropout=0.1,
                   checkpointing=checkpointing).double()


def bert(tmp_path, checkpointing: bool) -> nn.Module:
    pytest.importorskip("transformers")
    from multissl.domains.text import BertEncoder, TextDomain
    corpus = tmp_path / "lines.txt"
    corpus.write_text("\n".join(LINES), encoding="utf-8")
    domain = TextDomain(vocab_size=120, cache_dir=str(tmp_path / "cache"), data={"path": str(corpus)})
    domain.dataset("train")  # trains the tokenizer the model's vocabulary comes from
    torch.manual_seed(0)
    return BertEncoder(domain, dim=16, depth=3, heads=2, pool="mean", checkpointing=checkpointing).double()


def inner_modules(encoder: nn.Module) -> list[nn.Module]:
    """A module inside each block, run whenever its block runs (transformers keeps a layer's own hooks outside its
    checkpoint, so the count is taken one level down)."""
    if isinstance(encoder, Encoder):
        return [block.linear1 for block in encoder.blocks.layers]
    return [layer.intermediate for layer in encoder.bert.encoder.layer]


def step(encoder: nn.Module, x, pad) -> tuple[dict, int]:
    """One training forward and backward (with dropout, fixed seed) -> (gradients by name, block runs)."""
    runs = []
    hooks = [m.register_forward_hook(lambda *_: runs.append(1)) for m in inner_modules(encoder)]
    encoder.train().zero_grad()
    torch.manual_seed(1)
    tokens, pooled = encoder(x, pad=pad)
    loss = (pooled ** 2).sum() + tokens[~pad].sin().sum()
    loss.backward()
    for h in hooks:
        h.remove()
    return {k: p.grad.clone() for k, p in encoder.named_parameters() if p.grad is not None}, len(runs)


@pytest.mark.parametrize("build", ["transformer", "bert"])
def test_checkpointing_recomputes_each_block_and_keeps_the_gradients(tmp_path, build):
    make = transformer if build == "transformer" else (lambda c: bert(tmp_path, c))
    kept, recomputed = make(False), make(True)
    x, pad = ids_and_padding()
    grads, runs = step(kept, x, pad)
    grads_ck, runs_ck = step(recomputed, x, pad)
    depth = len(inner_modules(kept))
    assert runs == depth and runs_ck == 2 * depth  # each block once more, in the backward pass
    assert grads.keys() == grads_ck.keys() and len(grads) == len(list(kept.parameters()))
    for name, g in grads.items():
        torch.testing.assert_close(grads_ck[name], g, atol=1e-10, rtol=1e-10, msg=name)


def test_evaluation_and_no_grad_take_the_usual_path(monkeypatch):
    kept, recomputed = transformer(False), transformer(True)
    x, pad = ids_and_padding()
    calls = []
    real = encoder_module.checkpoint
    monkeypatch.setattr(encoder_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    for train, grad in ((False, True), (True, False), (False, False)):
        kept.train(train), recomputed.train(train)
        with torch.set_grad_enabled(grad):
            out = []
            for encoder in (kept, recomputed):
                torch.manual_seed(1)  # the same dropout masks in training mode
                out.append(encoder(x, pad=pad)[1])
        assert torch.equal(out[0], out[1])
    assert calls == []


def test_a_run_trains_with_checkpointing(tmp_path, monkeypatch):
    calls = []
    real = encoder_module.checkpoint
    monkeypatch.setattr(encoder_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    tiny = {k: int(v) for k, v in (a.split("=", 1) for a in TINY_ENCODER)}
    run = multissl.fit("image", "simclr", encoder="transformer", **tiny, **{
        "encoder.checkpointing": True, "data.num_workers": 0, "data.batch_size": 16, "trainer.max_steps": 2,
        "trainer.log_every": 1, "trainer.eval_every": 0, "trainer.eval_samples": 64, "trainer.baseline": False,
        "run.dir": str(tmp_path / "run")})
    losses = [r["loss"] for r in run.rows if "loss" in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert len(calls) >= 2 * tiny["encoder.depth"]  # every block of every step's forward
