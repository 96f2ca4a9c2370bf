"""SPR: the masked multi-step loss against numpy, the latent rollout against a hand-written one, the action
embeddings, the teacher, and the refusal of domains without episodes."""
import numpy as np
import pytest
import torch
from types import SimpleNamespace

from multissl.errors import UserError
from multissl.objectives.spr import SPR, spr_loss


def reference_spr(p, z, valid):
    """numpy: the mean of 2 - 2 cos over the (sample, step) pairs still inside the episode."""
    p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
    vals = [2 - 2 * p[i, k] @ z[i, k] / (np.linalg.norm(p[i, k]) * np.linalg.norm(z[i, k]))
            for i in range(p.shape[0]) for k in range(p.shape[1]) if valid[i, k]]
    return float(np.mean(vals)) if vals else 0.0


@pytest.mark.parametrize("b, k, d", [(1, 1, 3), (4, 3, 5), (6, 5, 8)])
def test_loss_matches_numpy_reference(b, k, d):
    g = torch.Generator().manual_seed(b * k + d)
    p, z = (torch.randn(b, k, d, generator=g, dtype=torch.float64) for _ in range(2))
    valid = torch.rand(b, k, generator=g) < 0.7
    valid[0, 0] = True
    assert spr_loss(p, z, valid).item() == pytest.approx(reference_spr(p, z, valid.numpy()), rel=1e-10, abs=1e-12)


def test_steps_past_the_episode_end_count_for_nothing_and_the_target_gets_no_gradient():
    g = torch.Generator().manual_seed(1)
    p = torch.randn(3, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(3, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    valid = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    loss = spr_loss(p, z, valid)
    loss.backward()
    assert (p.grad[~valid] == 0).all() and (p.grad[valid].abs().sum(-1) > 0).all()
    assert z.grad is None or (z.grad == 0).all()
    moved = p.detach().clone()
    moved[~valid] = torch.randn(int((~valid).sum()), 6, generator=g, dtype=torch.float64)
    assert spr_loss(moved, z, valid).item() == pytest.approx(loss.item(), abs=1e-12)
    assert spr_loss(3 * z.detach(), z, valid).item() == pytest.approx(0.0, abs=1e-12)  # aligned up to scale
    assert spr_loss(p, z, torch.zeros_like(valid)).item() == 0.0  # no valid step: nothing to learn


class Flat(torch.nn.Module):
    """A tiny encoder over vectors: the pooled output is a linear map of the input."""

    def __init__(self, d_in=6, dim=8):
        super().__init__()
        self.dim, self.lin = dim, torch.nn.Linear(d_in, dim)

    def forward(self, x, keep=None, pad=None):
        return None, self.lin(x)


def setup(kind="discrete", size=3, steps=3, seed=0):
    torch.manual_seed(seed)
    enc = Flat()
    obj = SPR(enc, SimpleNamespace(actions=(kind, size)), steps=steps, projector=(16, 8), predictor=(16, 8),
              transition=(16,))
    g = torch.Generator().manual_seed(seed + 1)
    b = 10
    action = (torch.randint(0, size, (b, steps), generator=g) if kind == "discrete"
              else torch.randn(b, steps, size, generator=g))
    valid = torch.ones(b, steps, dtype=torch.bool)
    valid[0, 1:] = False
    batch = {"views": [torch.randn(b, 6, generator=g) for _ in range(steps + 1)], "action": action, "valid": valid}
    return enc, obj, batch


@pytest.mark.parametrize("kind, size", [("discrete", 3), ("continuous", 2)])
def test_module_loss_rolls_the_latent_forward_with_each_action(kind, size):
    enc, obj, batch = setup(kind, size)
    loss, logs = obj(enc, batch, {"ema": 0.99, "step": 0, "total_steps": 10})
    with torch.no_grad():  # by hand: z_{t+1} = LayerNorm(z_t + MLP([z_t, e(a_t)])), each step's prediction vs teacher
        z = enc.lin(batch["views"][0])
        preds, targets = [], []
        t_enc, t_proj = obj.teacher.nets
        for i in range(3):
            e = obj.transition.embed(batch["action"][:, i])
            z = obj.transition.norm(z + obj.transition.step(torch.cat([z, e], -1)))
            preds.append(obj.predictor(obj.projector(z)).numpy())
            targets.append(t_proj(t_enc.lin(batch["views"][i + 1])).numpy())
    ref = reference_spr(np.stack(preds, 1), np.stack(targets, 1), batch["valid"].numpy())
    assert loss.item() == pytest.approx(ref, rel=1e-5, abs=1e-6)
    assert logs["rep"].shape == (10, 8)
    loss.backward()
    for name, p in [*enc.named_parameters(), *obj.named_parameters()]:
        if not name.startswith("teacher"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name  # every trainable parameter learns
        else:
            assert p.grad is None and not p.requires_grad


def test_teacher_follows_encoder_and_projector_at_the_momentum():
    enc, obj, batch = setup()
    with torch.no_grad():
        for p in [*enc.parameters(), *obj.projector.parameters()]:
            p.add_(1.0)
    before = [t.clone() for t in obj.teacher.nets.parameters()]
    students = [*enc.parameters(), *obj.projector.parameters()]
    obj.after_step(enc, {"ema": 0.9, "step": 0, "total_steps": 10})
    for t0, s, t1 in zip(before, students, obj.teacher.nets.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * s.detach())


def test_domains_without_episodes_refuse_it(tiny):
    with pytest.raises(UserError, match="objective=spr cannot train on domain=image: it needs episodes with actions, which domain=image does not offer; use domain=rl"):
        tiny.run("objective=spr", "trainer.max_steps=1")
