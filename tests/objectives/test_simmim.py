"""SimMIM: the mask token at a masked position (the empty input's embedding there plus the token), the masked content
never reaching the encoder, the loss against a loop reference of the linear head and the domain's masked error, and a
domain that corrupts in place (no mask token)."""
import math

import pytest
import torch

from multissl.domains.image import ImageDomain
from multissl.domains.tabular import TabularDomain
from multissl.encoder import Encoder, fill_masked
from multissl.objectives.simmim import SimMIM

SCHED = {"step": 0, "total_steps": 1, "lr": 0.0, "ema": 0.99, "progress": 0.0}


def image_setup(seed=0, b=3):
    torch.manual_seed(seed)
    d = ImageDomain(image_size=8, channels=1, patch_size=2, mask_ratio=0.5)  # 16 tokens, 8 masked
    enc = Encoder(d, dim=16, depth=2, heads=2)
    x = torch.randn(b, 1, 8, 8)
    keep, masked = d.mask(b, torch.Generator().manual_seed(seed))
    return d, enc, x, keep, masked


def patch_of(token: int, grid: int = 4, p: int = 2):
    """The pixel slice of token `token` in PatchEmbed's row-major order."""
    r, c = divmod(token, grid)
    return slice(r * p, (r + 1) * p), slice(c * p, (c + 1) * p)


def test_a_masked_token_is_the_mask_token_plus_its_position_and_the_others_are_untouched():
    d, enc, x, _, masked = image_setup()
    token = torch.randn(16)
    t = enc.embed(x)
    filled = fill_masked(enc.embed, x, t, masked, token)
    pos = enc.embed.pos.flatten(2).transpose(1, 2)[0]  # [n d]: the learned table in token order
    bias = enc.embed.proj.bias  # a zero patch projects to the bias alone
    for i in range(len(x)):
        for j in range(16):
            want = bias + pos[j] + token if j in masked[i].tolist() else t[i, j]
            torch.testing.assert_close(filled[i, j], want, rtol=0, atol=1e-6)


def test_padding_entries_of_masked_replace_nothing():
    d, enc, x, _, masked = image_setup()
    padded = torch.cat([masked, torch.full((len(x), 2), -1)], 1)
    t = enc.embed(x)
    token = torch.randn(16)
    torch.testing.assert_close(fill_masked(enc.embed, x, t, padded, token), fill_masked(enc.embed, x, t, masked, token))


def test_the_masked_content_never_reaches_the_encoder():
    d, enc, x, _, masked = image_setup()
    enc.eval()
    token = torch.randn(16)
    tokens, pooled = enc(x, masked=masked, mask_token=token)
    assert tokens.shape == (3, 16, 16)  # every position encoded
    y = x.clone()
    for i in range(len(x)):
        for j in masked[i].tolist():
            y[(i, 0, *patch_of(j))] = torch.randn(2, 2) * 5
    again, pooled_again = enc(y, masked=masked, mask_token=token)
    torch.testing.assert_close(again, tokens, rtol=0, atol=0)
    torch.testing.assert_close(pooled_again, pooled, rtol=0, atol=0)
    visible = next(j for j in range(16) if j not in masked[0].tolist())
    y[(0, 0, *patch_of(visible))] += 1.0
    assert not torch.allclose(enc(y, masked=masked, mask_token=token)[0][0], tokens[0])


def ref_loss(tokens, weight, bias, target, masked):
    """Linear head on each masked token, squared error against the target, mean over masked tokens and channels."""
    total, count = 0.0, 0
    for i in range(tokens.shape[0]):
        for j in masked[i].tolist():
            for e in range(target.shape[-1]):
                pred = sum(tokens[i, j, c] * weight[e, c] for c in range(tokens.shape[-1])) + bias[e]
                total += (pred - target[i, j, e]) ** 2
                count += 1
    return total / count


def test_loss_is_the_domains_error_of_a_linear_head_at_the_masked_tokens():
    d, enc, x, keep, masked = image_setup(seed=1, b=2)
    obj = SimMIM(enc, d)
    batch = {"views": [x], "keep": keep, "masked": masked}
    loss, logs = obj(enc, batch, SCHED)
    with torch.no_grad():
        tokens = enc(x, masked=masked, mask_token=obj.mask_token)[0].double()
        want = ref_loss(tokens, obj.head.weight.double(), obj.head.bias.double(), d.target(x).double(), masked)
    assert loss.item() == pytest.approx(float(want), rel=1e-5)
    assert logs["rep"].shape == (2, 16) and not logs["rep"].requires_grad


def test_gradients_reach_the_mask_token_and_the_encoders_input_only_at_visible_pixels():
    d, enc, x, keep, masked = image_setup(seed=2)
    obj = SimMIM(enc, d)
    loss, _ = obj(enc, {"views": [x], "keep": keep, "masked": masked}, SCHED)
    loss.backward()
    assert obj.mask_token.grad is not None and obj.mask_token.grad.abs().sum() > 0
    x = x.clone().requires_grad_()
    enc(x, masked=masked, mask_token=obj.mask_token)[0].sum().backward()
    for i in range(len(x)):
        for j in range(16):
            g = x.grad[(i, 0, *patch_of(j))].abs().sum()
            assert (g == 0) == (j in masked[i].tolist())


def test_a_domain_that_corrupts_in_place_needs_no_mask_token():
    d = TabularDomain(data={"name": "iris"}, mask_ratio=0.5)  # VIME: masked features replaced by marginal draws
    d.dataset("train")
    torch.manual_seed(0)
    enc = Encoder(d, dim=16, depth=1, heads=2)
    obj = SimMIM(enc, d)
    assert obj.mask_token is None and SimMIM.corrupt_view
    clean = torch.randn(4, d.num_tokens)
    keep, masked = d.mask(4, torch.Generator().manual_seed(0))
    corrupted = clean.clone()
    corrupted[torch.arange(4)[:, None], masked] = 0.0
    loss, _ = obj(enc, {"views": [corrupted], "clean": clean, "keep": keep, "masked": masked}, SCHED)
    want = d.reconstruction_loss(obj.head(enc(corrupted)[0]), d.target(clean), masked)
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(want.item(), rel=1e-6)
