"""MAE: image target (patchify + per-patch normalization), masked reconstruction loss, and the module."""
import math

import numpy as np
import pytest
import torch
from einops import rearrange

from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.heads import TokenPredictor
from multissl.objectives.mae import MAE


# ---- independent references ---------------------------------------------------------------------------
def ref_patchify(x, p):
    """einops patchify, channel-last inside a patch: (p q c)."""
    return rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)


def ref_patchify_loops(x, p):
    """Same thing by explicit loops over rows/cols of the patch grid (no einops, no unfold)."""
    b, c, hh, ww = x.shape
    out = np.zeros((b, (hh // p) * (ww // p), p * p * c))
    xn = x.numpy()
    for bi in range(b):
        for gi in range(hh // p):
            for gj in range(ww // p):
                vals = [xn[bi, ci, gi * p + pi, gj * p + qi] for pi in range(p) for qi in range(p) for ci in range(c)]
                out[bi, gi * (ww // p) + gj] = vals
    return out


def ref_norm_target(x, p):
    """Per-patch normalization with the unbiased variance (torch.var default), as in MAE's norm_pix_loss."""
    t = ref_patchify_loops(x, p)
    out = np.empty_like(t)
    k = t.shape[-1]
    for bi in range(t.shape[0]):
        for ni in range(t.shape[1]):
            v = t[bi, ni]
            mu = v.sum() / k
            var = ((v - mu) ** 2).sum() / (k - 1)
            out[bi, ni] = (v - mu) / math.sqrt(var + 1e-6)
    return out


def ref_masked_mse(pred, target, masked):
    """pred and target [b n t]; loop over samples and masked indices."""
    pred, target, masked = np.asarray(pred), np.asarray(target), np.asarray(masked)
    total, count = 0.0, 0
    for bi in range(pred.shape[0]):
        for tok in masked[bi]:
            for e in range(pred.shape[2]):
                total += (pred[bi, tok, e] - target[bi, tok, e]) ** 2
                count += 1
    return total / count


def domain(channels=1, size=8, patch=2, norm=True):
    d = ImageDomain(image_size=size, channels=channels, patch_size=patch, norm_pix_loss=norm)
    d.mean, d.std = [0.5] * channels, [0.25] * channels
    return d


# ---- target ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels,size,patch", [(1, 8, 2), (3, 8, 2), (3, 6, 3), (2, 4, 4)])
def test_target_patchify_channel_order_unnormalized(channels, size, patch):
    d = domain(channels, size, patch, norm=False)
    x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(channels), dtype=torch.float64)
    t = d.target(x)
    assert t.shape == (2, (size // patch) ** 2, d.target_dim)
    assert d.target_dim == patch * patch * channels
    assert torch.equal(t, ref_patchify(x, patch))
    np.testing.assert_array_equal(t.numpy(), ref_patchify_loops(x, patch))


@pytest.mark.parametrize("channels,size,patch", [(1, 8, 2), (3, 8, 2), (3, 6, 3)])
def test_target_normalized_per_patch(channels, size, patch):
    d = domain(channels, size, patch, norm=True)
    x = torch.rand(3, channels, size, size, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    t = d.target(x)
    np.testing.assert_allclose(t.numpy(), ref_norm_target(x, patch), rtol=1e-10, atol=1e-12)
    # each patch: zero mean, unbiased std ~1
    np.testing.assert_allclose(t.mean(-1).numpy(), 0.0, atol=1e-10)
    np.testing.assert_allclose(t.std(-1).numpy(), 1.0, atol=1e-4)


def test_target_constant_patch_is_finite_zero():
    d = domain()
    x = torch.full((1, 1, 8, 8), 0.7, dtype=torch.float64)
    t = d.target(x)
    assert torch.isfinite(t).all() and t.abs().max() < 1e-6


def test_target_token_order_matches_patch_embed():
    # token n of the target must be the patch the encoder embeds as token n (row-major grid)
    d = domain(channels=1, size=8, patch=2, norm=False)
    emb = d.embedder(1)
    with torch.no_grad():
        emb.proj.weight.zero_()
        emb.proj.weight[0, 0, 0, 0] = 1.0  # picks the top-left pixel of each patch
        emb.proj.bias.zero_()
        emb.pos.zero_()
    x = torch.randn(2, 1, 8, 8)
    tokens = emb(x)[..., 0]  # [b n]
    torch.testing.assert_close(tokens, d.target(x)[..., 0])


# ---- reconstruction loss ------------------------------------------------------------------------------------
def _masks(d, b, seed):
    return d.mask(b, torch.Generator().manual_seed(seed))


def test_reconstruction_loss_matches_loop_reference():
    d = domain(channels=3)
    keep, masked = _masks(d, 3, 0)
    g = torch.Generator().manual_seed(1)
    target = torch.randn(3, d.num_tokens, d.target_dim, generator=g, dtype=torch.float64)
    pred = torch.randn(3, d.num_tokens, d.target_dim, generator=g, dtype=torch.float64)
    got = d.reconstruction_loss(pred, target, masked).item()
    assert got == pytest.approx(ref_masked_mse(pred, target, masked), rel=1e-10)


def test_reconstruction_loss_ignores_kept_patches():
    d = domain()
    keep, masked = _masks(d, 4, 2)
    g = torch.Generator().manual_seed(3)
    target = torch.randn(4, d.num_tokens, d.target_dim, generator=g, dtype=torch.float64)
    pred = torch.randn(4, d.num_tokens, d.target_dim, generator=g, dtype=torch.float64)
    before = d.reconstruction_loss(pred, target, masked).item()
    changed, wild = target.clone(), pred.clone()
    for bi in range(4):
        changed[bi, keep[bi]] = 1e3 * torch.randn(keep.shape[1], d.target_dim, generator=g, dtype=torch.float64)
        wild[bi, keep[bi]] = 1e3 * torch.randn(keep.shape[1], d.target_dim, generator=g, dtype=torch.float64)
    assert d.reconstruction_loss(pred, changed, masked).item() == before
    assert d.reconstruction_loss(wild, target, masked).item() == before  # predictions at kept tokens too
    # ...but changing a masked patch does change it
    changed[0, masked[0, 0]] += 1.0
    assert d.reconstruction_loss(pred, changed, masked).item() != before


def test_reconstruction_loss_zero_on_perfect_prediction():
    d = domain()
    keep, masked = _masks(d, 2, 4)
    target = torch.randn(2, d.num_tokens, d.target_dim, dtype=torch.float64)
    pred = target.clone()
    for bi in range(2):
        pred[bi, keep[bi]] = 7.0  # wrong where nothing is scored
    assert d.reconstruction_loss(pred, target, masked).item() == 0.0


def test_mask_shapes_and_partition():
    d = domain()
    keep, masked = _masks(d, 4, 0)
    assert keep.shape == (4, 4) and masked.shape == (4, 12)  # 16 tokens, ratio 0.75
    for bi in range(4):
        assert sorted(keep[bi].tolist() + masked[bi].tolist()) == list(range(16))


# ---- module ----------------------------------------------------------------------------------------------------
def tiny_setup(seed=0):
    torch.manual_seed(seed)
    d = domain()
    enc = Encoder(d, dim=16, depth=1, heads=2)
    obj = MAE(enc, d, decoder_dim=16, decoder_depth=1, decoder_heads=2)
    keep, masked = d.mask(4, torch.Generator().manual_seed(0))
    x = torch.randn(4, 1, 8, 8)
    return d, enc, obj, {"views": [x], "keep": keep, "masked": masked}


def test_module_forward_finite_and_gradients_reach_encoder():
    d, enc, obj, batch = tiny_setup()
    loss, logs = obj(enc, batch, {})
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs["rep"].shape == (4, 16)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    assert enc.embed.proj.weight.grad is not None and enc.embed.proj.weight.grad.abs().sum() > 0
    assert obj.decoder.mask_token.grad is not None and obj.decoder.mask_token.grad.abs().sum() > 0


def test_module_encoder_sees_only_visible_tokens():
    d, enc, obj, batch = tiny_setup()
    lengths = []
    enc.blocks.register_forward_hook(lambda m, inp, out: lengths.append(inp[0].shape[1]))
    obj(enc, batch, {})
    k = batch["keep"].shape[1]
    assert lengths == [k + 1]  # cls token + visible patches only
    assert k < d.num_tokens


def test_module_loss_matches_reference_on_captured_prediction():
    d, enc, obj, batch = tiny_setup()
    preds = []
    obj.decoder.head.register_forward_hook(lambda m, inp, out: preds.append(out.detach().double()))
    loss, _ = obj(enc, batch, {})
    (pred,) = preds
    x, masked = batch["views"][0].double(), batch["masked"]
    assert pred.shape == (4, d.num_tokens, d.target_dim)  # every position; the loss scores the masked ones
    ref = ref_masked_mse(pred.numpy(), ref_norm_target(x, 2), masked.numpy())
    assert loss.item() == pytest.approx(ref, rel=1e-4)


def test_module_decoder_input_places_tokens_at_their_positions():
    d, enc, obj, batch = tiny_setup()
    enc_out, dec_in = [], []
    enc.register_forward_hook(lambda m, inp, out: enc_out.append(out[0].detach()))
    obj.decoder.blocks.register_forward_hook(lambda m, inp, out: dec_in.append(inp[0].detach()))
    obj(enc, batch, {})
    keep, masked = batch["keep"], batch["masked"]
    (tokens,), (full,) = enc_out, dec_in
    with torch.no_grad():
        projected = obj.decoder.embed(tokens)
        pos, mask_token = obj.decoder.pos[0], obj.decoder.mask_token[0, 0]
    for bi in range(keep.shape[0]):
        for i, tok in enumerate(keep[bi].tolist()):
            torch.testing.assert_close(full[bi, tok], projected[bi, i] + pos[tok])
        for tok in masked[bi].tolist():
            torch.testing.assert_close(full[bi, tok], mask_token + pos[tok])


def test_module_loss_ignores_target_at_kept_patches():
    d, enc, obj, batch = tiny_setup()
    loss, _ = obj(enc, batch, {})
    keep = batch["keep"]
    real_target = d.target

    def corrupted_target(x):
        t = real_target(x).clone()
        for bi in range(t.shape[0]):
            t[bi, keep[bi]] = 1e3
        return t

    d.target = corrupted_target  # instance attribute shadows the method; the module holds the same domain
    try:
        loss2, _ = obj(enc, batch, {})
    finally:
        del d.target
    assert loss2.item() == loss.item()


# ---- the shared token predictor (MAE's decoder) ------------------------------------------------------------------
def test_token_predictor_without_mask_token_decodes_every_position_from_its_token():
    """A domain that corrupts values instead of dropping tokens: keep covers every position and the decoder input
    is the projected tokens plus positions; a position missing from keep starts from zero."""
    torch.manual_seed(0)
    pred = TokenPredictor(in_dim=6, dim=8, depth=1, heads=2, n_tokens=5, out_dim=3, mask_token=False)
    assert pred.mask_token is None
    tokens = torch.randn(2, 5, 6)
    inputs = []
    pred.blocks.register_forward_hook(lambda m, inp, out: inputs.append(inp[0].detach()))
    with torch.no_grad():
        out = pred(tokens, torch.arange(5).repeat(2, 1))
        torch.testing.assert_close(out, pred.head(pred.norm(pred.blocks(pred.embed(tokens) + pred.pos))))
        pred(tokens[:, :3], torch.tensor([[0, 1, 4], [2, 3, 4]]))
        torch.testing.assert_close(inputs[-1][0, 2], pred.pos[0, 2])  # not in keep: zero + position
        torch.testing.assert_close(inputs[-1][1, 0], pred.pos[0, 0])


def test_token_predictor_padding_is_never_attended_to():
    torch.manual_seed(1)
    pred = TokenPredictor(in_dim=4, dim=8, depth=2, heads=2, n_tokens=7, out_dim=3)
    tokens = torch.randn(2, 3, 4)
    keep = torch.tensor([[0, 2, 5], [1, 3, -1]])  # sample 1 has 4 tokens, one kept slot is padding
    pad = torch.arange(6)[None, :] >= torch.tensor([6, 4])[:, None]  # [b n]
    with torch.no_grad():
        out = pred(tokens, keep, pad=pad)
        assert out.shape == (2, 6, 3)  # n from pad
        wild = tokens.clone()
        wild[1, 2] = 1e4  # what stands in a padded slot of keep changes nothing
        alone = pred(wild[1:, :2], keep[1:, :2], pad=pad[1:, :4])
    torch.testing.assert_close(out[1, :4], alone[0], atol=1e-5, rtol=0)


def test_token_predictor_at_predicts_the_named_positions_alone():
    torch.manual_seed(2)
    pred = TokenPredictor(in_dim=4, dim=8, depth=1, heads=2, n_tokens=6, out_dim=5)
    tokens, keep = torch.randn(2, 3, 4), torch.tensor([[0, 2, 5], [1, 3, 4]])
    at = torch.tensor([[4, 1, 3], [5, 0, -1]])  # -1: padding of the index tensor
    with torch.no_grad():
        full, only = pred(tokens, keep), pred(tokens, keep, at=at)
    assert only.shape == (2, 3, 5)
    torch.testing.assert_close(only[0], full[0, [4, 1, 3]])
    torch.testing.assert_close(only[1, :2], full[1, [5, 0]])


def test_mae_predicts_only_the_masked_positions_where_the_domain_scores_only_those():
    """A domain with scores_masked_only (text's vocabulary logits): pred is [b m target_dim], in `masked`'s order,
    equal to the full prediction at those positions, and the loss sees the same numbers."""
    torch.manual_seed(3)
    d = ImageDomain(mask_ratio=0.75)
    d.dataset("train")
    enc = Encoder(d, dim=16, depth=1, heads=2)
    mae = MAE(enc, d, decoder_dim=16, decoder_depth=1, decoder_heads=2).eval()
    keep, masked = d.mask(4, torch.Generator().manual_seed(0))
    batch = {"views": [torch.randn(4, 1, 8, 8)], "keep": keep, "masked": masked}
    with torch.no_grad():
        full, _ = mae.predict(enc, batch)
        d.scores_masked_only = True
        only, _ = mae.predict(enc, batch)
    assert full.shape[1] == d.num_tokens and only.shape[1] == masked.shape[1]
    torch.testing.assert_close(only, torch.gather(full, 1, masked[..., None].expand(-1, -1, full.shape[-1])))


def test_module_runs_under_bf16_autocast():
    """trainer.precision=bf16: the decoder's input is bf16 while the mask token is a float32 parameter."""
    d, enc, obj, batch = tiny_setup()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = obj(enc, batch, {})
    loss.backward()
    assert torch.isfinite(loss) and obj.decoder.mask_token.grad is not None
