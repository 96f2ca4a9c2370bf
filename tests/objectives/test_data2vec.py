"""data2vec: targets (top-K average of instance-normalised block outputs, then layer norm) and the masked regression
loss against loop references, the encoder's per-block outputs, the module (student sees the visible tokens, teacher
the whole input) and its EMA teacher after one optimizer step."""
import math

import numpy as np
import pytest
import torch

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.objectives.data2vec import Data2Vec, data2vec_targets, instance_norm, regression_loss, token_variance
from toys import ToySequences


# ---- independent references (plain loops, float64) ------------------------------------------------------------
def ref_instance_norm(h, lengths, eps=1e-5):
    """h [b n d]; sample i has lengths[i] real tokens (the rest padding, left as they are)."""
    h = np.asarray(h, dtype=np.float64)
    out = h.copy()
    for i, length in enumerate(lengths):
        for c in range(h.shape[2]):
            vals = h[i, :length, c]
            mu = sum(vals) / length
            var = sum((v - mu) ** 2 for v in vals) / length
            out[i, :length, c] = (vals - mu) / math.sqrt(var + eps)
    return out


def ref_layer_norm(y, eps=1e-5):
    out = np.empty_like(y)
    for idx in np.ndindex(*y.shape[:-1]):
        v = y[idx]
        mu = v.sum() / len(v)
        out[idx] = (v - mu) / math.sqrt(((v - mu) ** 2).sum() / len(v) + eps)
    return out


def ref_targets(hidden, top_k, layer_norm, lengths):
    top = hidden[-top_k:] if top_k else hidden
    y = sum(ref_instance_norm(h, lengths) for h in top) / len(top)
    return ref_layer_norm(y) if layer_norm else y


def ref_loss(pred, target, masked, beta=0.0):
    """Mean over the real masked tokens and channels of the squared error or smooth L1 (Huber / beta)."""
    pred, target, masked = np.asarray(pred), np.asarray(target), np.asarray(masked)
    total, count = 0.0, 0
    for i in range(pred.shape[0]):
        for tok in masked[i]:
            if tok < 0:
                continue
            for c in range(pred.shape[2]):
                e = abs(pred[i, tok, c] - target[i, tok, c])
                total += e * e if beta == 0 else (0.5 * e * e / beta if e < beta else e - 0.5 * beta)
                count += 1
    return total / count


def lengths_pad(lengths, n):
    return torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]  # [b n] True = padding


# ---- targets ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("b,n,d,blocks,top_k,layer_norm", [(2, 5, 3, 3, None, True), (3, 7, 4, 4, 2, True),
                                                          (1, 4, 6, 2, 1, False), (2, 9, 5, 3, 3, False)])
def test_targets_match_loop_reference(b, n, d, blocks, top_k, layer_norm):
    g = torch.Generator().manual_seed(b * n + d)
    hidden = [torch.randn(b, n, d, generator=g, dtype=torch.float64) * (i + 1) + i for i in range(blocks)]
    got = data2vec_targets(hidden, top_k, layer_norm)
    ref = ref_targets([h.numpy() for h in hidden], top_k, layer_norm, [n] * b)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_targets_with_padding_normalise_over_each_samples_real_tokens():
    g = torch.Generator().manual_seed(3)
    lengths = [6, 3, 4]
    hidden = [torch.randn(3, 6, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    got = data2vec_targets(hidden, 2, True, pad=lengths_pad(lengths, 6))
    ref = ref_targets([h.numpy() for h in hidden], 2, True, lengths)
    for i, length in enumerate(lengths):
        np.testing.assert_allclose(got[i, :length].numpy(), ref[i, :length], rtol=1e-10, atol=1e-12)
    # a sample's targets do not depend on what its padding holds
    wild = [h.clone() for h in hidden]
    for h in wild:
        h[1, 3:] = 1e4
    assert torch.equal(data2vec_targets(wild, 2, True, pad=lengths_pad(lengths, 6))[1, :3], got[1, :3])


def test_instance_norm_is_torch_instance_norm_over_tokens():
    h = torch.randn(3, 8, 5, dtype=torch.float64)
    expected = torch.nn.functional.instance_norm(h.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(instance_norm(h), expected)


def test_collapsed_blocks_give_zero_targets_and_zero_variance():
    hidden = [torch.full((2, 5, 4), 3.0, dtype=torch.float64), torch.ones(2, 5, 4, dtype=torch.float64)]
    y = data2vec_targets(hidden)
    assert torch.isfinite(y).all() and y.abs().max() == 0
    masked = torch.tensor([[0, 2], [1, -1]])
    assert token_variance(y, masked).item() == 0.0


def test_token_variance_matches_numpy_over_scored_tokens():
    g = torch.Generator().manual_seed(4)
    y = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    masked = torch.tensor([[0, 5, 2], [1, -1, -1], [3, 4, -1]])
    rows = np.stack([y[i, t].numpy() for i in range(3) for t in masked[i].tolist() if t >= 0])
    assert token_variance(y, masked).item() == pytest.approx(rows.var(0, ddof=1).mean(), rel=1e-5)


# ---- loss ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("b,n,d", [(2, 6, 3), (3, 9, 5)])
def test_loss_at_masked_positions_matches_loop_reference(beta, b, n, d):
    g = torch.Generator().manual_seed(b + n + d)
    pred = torch.randn(b, n, d, generator=g, dtype=torch.float64) * 2
    target = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    masked = torch.stack([torch.randperm(n, generator=g)[:n // 2] for _ in range(b)])
    masked[0, -1] = -1  # padding of a variable-length batch: not scored
    got = regression_loss(pred, target, masked, beta).item()
    assert got == pytest.approx(ref_loss(pred, target, masked, beta), rel=1e-10)


def test_loss_ignores_unmasked_positions_and_is_zero_on_perfect_prediction():
    g = torch.Generator().manual_seed(5)
    target = torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    masked = torch.tensor([[1, 4], [0, -1]])
    pred = target.clone()
    pred[0, [0, 2, 3, 5]] = 1e3  # wrong where nothing is scored
    pred[1, 1:] = -1e3  # including behind the -1 padding
    assert regression_loss(pred, target, masked).item() == 0.0
    pred[0, 4] += 1.0
    assert regression_loss(pred, target, masked).item() > 0


def test_gradient_reaches_predictions_at_masked_positions_only_never_the_target():
    g = torch.Generator().manual_seed(6)
    pred = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    masked = torch.tensor([[1, 3], [4, -1]])
    regression_loss(pred, target, masked).backward()
    assert target.grad is None
    scored = torch.zeros(2, 5, dtype=torch.bool)
    scored[0, [1, 3]] = scored[1, 4] = True
    assert (pred.grad[scored].abs().sum(-1) > 0).all() and pred.grad[~scored].abs().max() == 0


# ---- the encoder's per-block outputs ----------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("train", [True, False])
def test_hidden_states_last_block_then_norm_is_forward(pool, train):
    torch.manual_seed(0)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    enc = Encoder(d, dim=16, depth=3, heads=2, pool=pool).train(train)
    x, keep = torch.randn(3, 1, 8, 8), torch.tensor([[0, 3, 5, 9]] * 3)
    with torch.no_grad():
        for k in (None, keep):
            hidden = enc.hidden_states(x, k)
            assert len(hidden) == 3 and all(h.shape == (3, 16 if k is None else 4, 16) for h in hidden)
            torch.testing.assert_close(enc.norm(hidden[-1]), enc(x, k)[0], rtol=0, atol=0)


def test_hidden_states_are_each_blocks_output_and_respect_padding():
    torch.manual_seed(1)
    dom = ToySequences()
    enc = Encoder(dom, dim=16, depth=2, heads=2)
    x, pad = dom.collate([torch.randn(n, 3) for n in (4, 9, 6)])
    seen = []
    for block in enc.blocks.layers:
        block.register_forward_hook(lambda m, inp, out: seen.append(out[:, 1:]))  # drop cls
    with torch.no_grad():
        tokens = enc(x, pad=pad)[0]
        hidden = enc.hidden_states(x, pad=pad)
        alone = enc.hidden_states(x[2:3, :6], pad=pad[2:3, :6])
    for h, s in zip(hidden, seen[:2]):
        torch.testing.assert_close(h, s, rtol=0, atol=0)
    torch.testing.assert_close(enc.norm(hidden[-1])[~pad], tokens[~pad], rtol=0, atol=0)
    torch.testing.assert_close(hidden[-1][2, :6], alone[-1][0], atol=1e-6, rtol=0)  # padding is never attended to


# ---- module ---------------------------------------------------------------------------------------------------
def tiny_setup(seed=0, **kw):
    torch.manual_seed(seed)
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    d.mean, d.std = [0.5], [0.25]
    enc = Encoder(d, dim=16, depth=2, heads=2)
    obj = Data2Vec(enc, d, decoder_dim=16, decoder_depth=1, decoder_heads=2, **kw)
    keep, masked = d.mask(4, torch.Generator().manual_seed(0))
    return d, enc, obj, {"views": [torch.randn(4, 1, 8, 8)], "keep": keep, "masked": masked}


def test_module_loss_matches_reference_from_captured_teacher_blocks():
    d, enc, obj, batch = tiny_setup(top_k=1)
    teacher_blocks, student_len, teacher_len, preds = [], [], [], []
    (teacher,) = obj.teacher.nets
    for block in teacher.blocks.layers:
        block.register_forward_hook(lambda m, inp, out: teacher_blocks.append(out[:, 1:].double()))
    enc.blocks.register_forward_hook(lambda m, inp, out: student_len.append(inp[0].shape[1]))
    teacher.blocks.layers[0].register_forward_hook(lambda m, inp, out: teacher_len.append(inp[0].shape[1]))
    obj.decoder.head.register_forward_hook(lambda m, inp, out: preds.append(out.detach().double()))
    loss, logs = obj(enc, batch, {"ema": 0.99})
    assert student_len == [batch["keep"].shape[1] + 1] and teacher_len == [d.num_tokens + 1]  # cls + tokens
    (pred,) = preds
    assert pred.shape == (4, d.num_tokens, 16)
    target = ref_targets([h.numpy() for h in teacher_blocks], 1, True, [d.num_tokens] * 4)
    assert loss.item() == pytest.approx(ref_loss(pred.numpy(), target, batch["masked"].numpy()), rel=1e-5)
    assert logs["mse"].item() == pytest.approx(loss.item(), rel=1e-6)
    assert {"rep", "target_var", "pred_var", "mse"} <= logs.keys() and logs["rep"].shape == (4, 16)
    assert all(torch.isfinite(v).all() for v in logs.values())
    assert logs["target_var"].item() > 0.1  # normalised targets of a random teacher are far from collapsed


def test_module_top_k_beyond_the_encoders_blocks_is_refused():
    d, enc, obj, batch = tiny_setup(top_k=3)
    with pytest.raises(UserError, match="top_k=3"):
        obj(enc, batch, {"ema": 0.99})


def test_module_gradients_reach_student_and_decoder_never_the_teacher():
    d, enc, obj, batch = tiny_setup()
    loss, _ = obj(enc, batch, {"ema": 0.99})
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in obj.decoder.parameters())
    assert all(not p.requires_grad and p.grad is None for p in obj.teacher.parameters())


def test_teacher_after_one_optimizer_step_and_after_step_is_the_reference_ema():
    d, enc, obj, batch = tiny_setup(momentum=0.8)  # its own cosine: 0.9 half way, whatever the engine's ema
    students = list(enc.parameters())
    teachers = list(obj.teacher.nets[0].parameters())
    for s, t in zip(students, teachers):  # the teacher starts as a copy of the encoder
        assert torch.equal(s, t)
    opt = torch.optim.SGD([*enc.parameters(), *obj.parameters()], lr=0.5)
    before = [t.detach().double().clone() for t in teachers]
    loss, _ = obj(enc, batch, {"ema": 0.9})
    loss.backward()
    grads = [p.grad.double().clone() for p in students]
    opt.step()
    for t, old in zip(teachers, before):  # the optimizer leaves the teacher alone
        assert torch.equal(t.double(), old)
    obj.after_step(enc, {"step": 50, "total_steps": 100, "ema": 0.2})
    for t, old, s, g in zip(teachers, before, students, grads):
        new_student = old - 0.5 * g  # the student was the teacher's copy before the step
        torch.testing.assert_close(s.detach().double(), new_student, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(t.detach().double(), 0.9 * old + 0.1 * new_student, rtol=1e-6, atol=1e-7)


def test_module_on_a_domain_that_corrupts_values_teacher_reads_the_clean_view():
    d, enc, obj, batch = tiny_setup()
    d.drops_masked = False  # as tabular VIME: keep covers every token, masked values are replaced in the input
    obj = Data2Vec(enc, d, decoder_dim=16, decoder_depth=1, decoder_heads=2)
    assert obj.decoder.mask_token is None
    clean = batch["views"][0]
    batch = {**batch, "views": [clean + 1], "clean": clean, "keep": torch.arange(d.num_tokens).repeat(4, 1)}
    inputs = {}
    enc.embed.register_forward_hook(lambda m, inp, out: inputs.update(student=inp[0]))
    obj.teacher.nets[0].embed.register_forward_hook(lambda m, inp, out: inputs.update(teacher=inp[0]))
    loss, _ = obj(enc, batch, {"ema": 0.99})
    assert torch.isfinite(loss)
    assert torch.equal(inputs["student"], clean + 1) and torch.equal(inputs["teacher"], clean)


def test_module_variable_length_targets_are_each_samples_own():
    torch.manual_seed(2)
    dom = ToySequences()
    enc = Encoder(dom, dim=16, depth=2, heads=2)
    obj = Data2Vec(enc, dom, decoder_dim=16, decoder_depth=1, decoder_heads=2)
    x, pad = dom.collate([torch.randn(n, 3) for n in (5, 12, 7)])
    keep = torch.tensor([[0, 2, 4, -1, -1, -1], [0, 1, 3, 5, 8, 11], [1, 2, 6, -1, -1, -1]])
    masked = torch.tensor([[1, 3, -1, -1, -1, -1], [2, 4, 6, 7, 9, 10], [0, 3, 4, 5, -1, -1]])
    loss, logs = obj(enc, {"views": [x], "pad": [pad], "keep": keep, "masked": masked}, {"ema": 0.99})
    assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in logs.values())
    together, alone = obj.targets(x, pad), obj.targets(x[2:3, :7], pad[2:3, :7])
    torch.testing.assert_close(together[2, :7], alone[0], atol=1e-5, rtol=0)
