"""I-JEPA: layer-normalised targets, the latent regression at the target tokens and the prediction cosine against
loop references; the shared token predictor in I-JEPA's form (context tokens + mask tokens at the targets); the
module (context encoder sees the visible tokens, target encoder the whole input) and its EMA target encoder after
one optimizer step."""
import math

import numpy as np
import pytest
import torch

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.heads import TokenPredictor
from multissl.objectives.ijepa import IJEPA, ijepa_targets, prediction_cosine
from toys import ToySequences


# ---- independent references ------------------------------------------------------------------------------------
def ref_layer_norm(h, eps=1e-5):
    h = np.asarray(h, dtype=np.float64)
    out = np.empty_like(h)
    for idx in np.ndindex(*h.shape[:-1]):
        v = h[idx]
        mu = v.sum() / len(v)
        out[idx] = (v - mu) / math.sqrt(((v - mu) ** 2).sum() / len(v) + eps)
    return out


def ref_l2(pred, target, masked):
    """The paper's L2 average: mean over target tokens and channels of the squared difference."""
    total, count = 0.0, 0
    for i in range(pred.shape[0]):
        for tok in masked[i]:
            if tok >= 0:
                total += ((pred[i, tok] - target[i, tok]) ** 2).sum()
                count += pred.shape[2]
    return total / count


def ref_cosine(pred, target, masked):
    vals = [np.dot(pred[i, t], target[i, t]) / (np.linalg.norm(pred[i, t]) * np.linalg.norm(target[i, t]))
            for i in range(pred.shape[0]) for t in masked[i] if t >= 0]
    return float(np.mean(vals))


# ---- targets, cosine ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 5, 3), (3, 16, 8), (1, 1, 7)])
def test_targets_are_parameter_free_layer_norm(shape):
    h = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=torch.float64) * 3 + 1
    np.testing.assert_allclose(ijepa_targets(h).numpy(), ref_layer_norm(h.numpy()), rtol=1e-10, atol=1e-12)


def test_targets_of_a_collapsed_encoder_are_zero():
    h = torch.full((2, 4, 6), 2.5, dtype=torch.float64)
    assert ijepa_targets(h).abs().max() == 0


def test_prediction_cosine_matches_numpy_and_skips_padding():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    target = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    masked = torch.tensor([[0, 5, 2], [1, -1, -1], [3, 4, -1]])
    got = prediction_cosine(pred, target, masked).item()
    assert got == pytest.approx(ref_cosine(pred.numpy(), target.numpy(), masked.numpy()), rel=1e-10)
    assert prediction_cosine(2 * target, target, masked).item() == pytest.approx(1.0)


# ---- the token predictor in I-JEPA's form -------------------------------------------------------------------------
def test_predictor_equals_context_plus_mask_tokens_at_the_targets():
    """I-JEPA's predictor runs on [context tokens + pos; mask token + pos at each target]; the shared predictor
    scatters the same tokens into the sequence. Attention does not depend on the order, so the outputs at the
    targets agree."""
    torch.manual_seed(0)
    pred = TokenPredictor(in_dim=6, dim=8, depth=2, heads=2, n_tokens=10, out_dim=5).eval()
    g = torch.Generator().manual_seed(2)
    order = torch.stack([torch.randperm(10, generator=g) for _ in range(3)])
    keep, masked = order[:, :4], order[:, 4:]
    tokens = torch.randn(3, 4, 6, generator=g)
    with torch.no_grad():
        out = pred(tokens, keep)  # [b n out]
        pos = pred.pos[0]
        ctx = pred.embed(tokens) + pos[keep]  # [b k dim]
        tgt = pred.mask_token.expand(3, 6, -1) + pos[masked]  # [b m dim]
        ref = pred.head(pred.norm(pred.blocks(torch.cat([ctx, tgt], 1))))[:, 4:]  # outputs at the targets
    for i in range(3):
        torch.testing.assert_close(out[i, masked[i]], ref[i], atol=1e-5, rtol=1e-5)


# ---- module ---------------------------------------------------------------------------------------------------------
def tiny_setup(seed=0, **kw):
    torch.manual_seed(seed)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=1, heads=2)
    obj = IJEPA(enc, d, predictor_depth=1, predictor_heads=2, **kw)
    keep, masked = d.mask(4, torch.Generator().manual_seed(0))
    return d, enc, obj, {"views": [torch.randn(4, 1, 8, 8)], "keep": keep, "masked": masked}


def test_module_predictor_is_narrow():
    _, enc, obj, _ = tiny_setup()
    assert obj.predictor.pos.shape[-1] == enc.dim // 2 and obj.predictor.head.out_features == enc.dim


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_module_loss_matches_reference_from_captured_outputs(beta):
    d, enc, obj, batch = tiny_setup(beta=beta)
    (teacher,) = obj.teacher.nets
    lengths, teacher_out, preds = {}, [], []
    enc.blocks.register_forward_hook(lambda m, inp, out: lengths.update(context=inp[0].shape[1]))
    teacher.blocks.register_forward_hook(lambda m, inp, out: lengths.update(target=inp[0].shape[1]))
    teacher.register_forward_hook(lambda m, inp, out: teacher_out.append(out[0].double()))
    obj.predictor.head.register_forward_hook(lambda m, inp, out: preds.append(out.detach().double()))
    loss, logs = obj(enc, batch, {"ema": 0.99})
    assert lengths == {"context": batch["keep"].shape[1] + 1, "target": d.num_tokens + 1}  # cls + tokens
    (pred,), (h,) = preds, teacher_out
    target, masked = ref_layer_norm(h.numpy()), batch["masked"].numpy()
    if beta == 0:
        assert loss.item() == pytest.approx(ref_l2(pred.numpy(), target, masked), rel=1e-5)
    else:  # smooth L1 with beta 1: 0.5 e^2 below 1, |e| - 0.5 above
        e = np.abs(np.stack([pred.numpy()[i, masked[i]] - target[i, masked[i]] for i in range(4)]))
        assert loss.item() == pytest.approx(np.where(e < 1, 0.5 * e * e, e - 0.5).mean(), rel=1e-5)
    assert logs["pred_cos"].item() == pytest.approx(ref_cosine(pred.numpy(), target, masked), rel=1e-4)
    rows = np.concatenate([target[i, masked[i]] for i in range(4)])
    assert logs["target_std"].item() == pytest.approx(np.sqrt(rows.var(0, ddof=1).mean()), rel=1e-4)
    assert logs["rep"].shape == (4, 16) and not logs["rep"].requires_grad


def test_module_gradients_reach_context_encoder_and_predictor_never_the_target_encoder():
    d, enc, obj, batch = tiny_setup()
    loss, _ = obj(enc, batch, {"ema": 0.99})
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.predictor.parameters())
    assert all(not p.requires_grad and p.grad is None for p in obj.teacher.parameters())


def test_target_encoder_after_one_optimizer_step_and_after_step_is_the_reference_ema():
    d, enc, obj, batch = tiny_setup(momentum=0.4)  # its own cosine: 0.7 half way, whatever the engine's ema
    students, teachers = list(enc.parameters()), list(obj.teacher.nets[0].parameters())
    assert all(torch.equal(s, t) for s, t in zip(students, teachers))  # starts as a copy of the encoder
    opt = torch.optim.AdamW([*enc.parameters(), *obj.parameters()], lr=0.01)
    before = [t.detach().double().clone() for t in teachers]
    loss, _ = obj(enc, batch, {"ema": 0.7})
    loss.backward()
    opt.step()
    assert all(torch.equal(t.double(), old) for t, old in zip(teachers, before))  # no optimizer step on it
    after_opt = [s.detach().double().clone() for s in students]
    assert any(not torch.equal(s, old) for s, old in zip(after_opt, before))
    obj.after_step(enc, {"step": 50, "total_steps": 100, "ema": 0.2})
    for t, old, s in zip(teachers, before, after_opt):
        torch.testing.assert_close(t.detach().double(), 0.7 * old + 0.3 * s, rtol=1e-6, atol=1e-7)


def test_module_on_a_domain_that_corrupts_values_target_encoder_reads_the_clean_view():
    d, enc, obj, batch = tiny_setup()
    d.drops_masked = False  # as tabular VIME: keep covers every token, masked values are replaced in the input
    obj = IJEPA(enc, d, predictor_depth=1, predictor_heads=2)
    assert obj.predictor.mask_token is None
    clean = batch["views"][0]
    batch = {**batch, "views": [clean * 2], "clean": clean, "keep": torch.arange(d.num_tokens).repeat(4, 1)}
    inputs = {}
    enc.embed.register_forward_hook(lambda m, inp, out: inputs.update(context=inp[0]))
    obj.teacher.nets[0].embed.register_forward_hook(lambda m, inp, out: inputs.update(target=inp[0]))
    loss, _ = obj(enc, batch, {"ema": 0.99})
    assert torch.isfinite(loss)
    assert torch.equal(inputs["context"], clean * 2) and torch.equal(inputs["target"], clean)


def test_module_variable_length_predictions_are_each_samples_own():
    torch.manual_seed(3)
    dom = ToySequences()
    enc = Encoder(dom, dim=16, depth=1, heads=2)
    obj = IJEPA(enc, dom, predictor_depth=1, predictor_heads=2)
    x, pad = dom.collate([torch.randn(n, 3) for n in (5, 12, 7)])
    keep = torch.tensor([[0, 2, 4, -1, -1, -1], [0, 1, 3, 5, 8, 11], [1, 2, 6, -1, -1, -1]])
    masked = torch.tensor([[1, 3, -1, -1, -1, -1], [2, 4, 6, 7, 9, 10], [0, 3, 4, 5, -1, -1]])
    preds = []
    obj.predictor.head.register_forward_hook(lambda m, inp, out: preds.append(out.detach()))
    loss, logs = obj(enc, {"views": [x], "pad": [pad], "keep": keep, "masked": masked}, {"ema": 0.99})
    assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in logs.values())
    obj(enc, {"views": [x[2:3, :7]], "pad": [pad[2:3, :7]], "keep": keep[2:3, :3], "masked": masked[2:3, :4]},
        {"ema": 0.99})
    torch.testing.assert_close(preds[0][2, :7], preds[1][0], atol=1e-5, rtol=0)


def test_momentum_none_follows_the_engines_ema():
    d, enc, obj, batch = tiny_setup(momentum=None)
    before = [t.detach().clone() for t in obj.teacher.nets[0].parameters()]
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(1.0)
    obj.after_step(enc, {"step": 50, "total_steps": 100, "ema": 0.25})
    for t, old, s in zip(obj.teacher.nets[0].parameters(), before, enc.parameters()):
        torch.testing.assert_close(t, 0.25 * old + 0.75 * s)
