"""Image domain model input: views, masks, preprocessing, the patch embedding and target, and the exported state."""
import pytest
import torch

from multissl.domains.image import ImageDomain
from multissl.domains.patches import PatchEmbed
from multissl.errors import UserError

GRAY = {"image_size": 8, "channels": 1, "mean": [0.3], "std": [0.4]}
RGB = {"image_size": 8, "channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}

# ---- views --------------------------------------------------------------------------------------

def test_views_shapes_and_dtype(digits):
    x = digits.dataset("train")[0]["x"]
    v = digits.views(x, torch.Generator().manual_seed(0), n_global=2)
    assert len(v) == 2
    assert all(t.shape == (1, 8, 8) and t.dtype == torch.float32 for t in v)
    assert not torch.equal(v[0], v[1])  # two independent augmentations


def test_views_are_a_function_of_the_generator(digits):
    x = digits.dataset("train")[3]["x"]
    a = digits.views(x, torch.Generator().manual_seed(7))
    b = digits.views(x, torch.Generator().manual_seed(7))
    c = digits.views(x, torch.Generator().manual_seed(8))
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))


def test_views_do_not_touch_the_global_rng(digits):
    x = digits.dataset("train")[3]["x"]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    digits.views(x, torch.Generator().manual_seed(1))
    assert torch.equal(before, torch.get_rng_state())


def test_local_crops_add_small_views(digits):
    d = ImageDomain(local_crops=2, state=digits.state())
    v = d.views(digits.dataset("train")[0]["x"], torch.Generator().manual_seed(0), n_global=2)
    assert [tuple(t.shape) for t in v] == [(1, 8, 8), (1, 8, 8), (1, 4, 4), (1, 4, 4)]


def test_local_size_override(digits):
    d = ImageDomain(local_crops=1, local_size=6, state=digits.state())
    v = d.views(digits.dataset("train")[0]["x"], torch.Generator().manual_seed(0))
    assert v[-1].shape == (1, 6, 6)


def test_rgb_views_with_jitter_and_grayscale():
    x = torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    gray = ImageDomain(jitter_p=1.0, grayscale=1.0, state=RGB)
    for v in gray.views(x, torch.Generator().manual_seed(0), n_global=2):
        assert v.shape == (3, 8, 8) and torch.isfinite(v).all()
        assert torch.allclose(v[0], v[1]) and torch.allclose(v[1], v[2])  # grayscale applied
    color = ImageDomain(jitter_p=1.0, grayscale=0.0, state=RGB)
    for v in color.views(x, torch.Generator().manual_seed(0), n_global=2):
        assert v.shape == (3, 8, 8) and not torch.allclose(v[0], v[1])


def test_blur_path_runs_on_small_images(digits):
    d = ImageDomain(blur=1.0, blur_sigma=(1.5, 2.0), local_crops=1, state=digits.state())
    v = d.views(digits.dataset("train")[0]["x"], torch.Generator().manual_seed(0))
    assert [tuple(t.shape) for t in v] == [(1, 8, 8), (1, 8, 8), (1, 4, 4)]
    assert all(torch.isfinite(t).all() for t in v)


# ---- masks --------------------------------------------------------------------------------------

def test_mask_partitions_tokens(digits):
    n = digits.num_tokens
    assert n == 16
    keep, masked = digits.mask(4, torch.Generator().manual_seed(0))
    assert keep.shape[0] == masked.shape[0] == 4
    assert keep.shape[1] + masked.shape[1] == n
    assert masked.shape[1] == round(0.75 * n)
    for k, m in zip(keep.tolist(), masked.tolist()):
        assert not set(k) & set(m)
        assert set(k) | set(m) == set(range(n))
    assert not all(torch.equal(keep[0], keep[i]) for i in range(1, 4))  # random per sample


def test_mask_is_a_function_of_the_generator(digits):
    a = digits.mask(3, torch.Generator().manual_seed(5))
    b = digits.mask(3, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ---- preprocess ---------------------------------------------------------------------------------

def _batch(b=3, c=1, h=8, w=8, seed=0):
    return torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_preprocess_uint8_and_float_agree(digits):
    x = _batch()
    a, b = digits.preprocess(x), digits.preprocess(x.float() / 255)
    assert a.shape == (3, 1, 8, 8) and a.dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-6)
    mean, std = digits.mean[0], digits.std[0]
    assert torch.allclose(a, (x.float() / 255 - mean) / std, atol=1e-5)


def test_preprocess_numpy_input(digits):
    x = _batch()
    assert torch.allclose(digits.preprocess(x.numpy()), digits.preprocess(x))


def test_preprocess_matches_eval_input(digits):
    x = digits.dataset("test")[0]["x"]
    assert torch.allclose(digits.preprocess(x[None])[0], digits.eval_input(x), atol=1e-6)


def test_preprocess_wrong_channel_count_is_user_error(digits):
    with pytest.raises(UserError, match="2 channels"):
        digits.preprocess(_batch(c=2))


def test_preprocess_wrong_rank_is_user_error(digits):
    with pytest.raises(UserError, match="shape"):
        digits.preprocess(torch.zeros(8, 8, dtype=torch.uint8))


def test_preprocess_hw_batch_into_rgb_domain_is_user_error():
    d = ImageDomain(state=RGB)
    with pytest.raises(UserError):
        d.preprocess(torch.zeros(2, 8, 8, dtype=torch.uint8))


def test_preprocess_resizes_other_sizes(digits):
    big = torch.full((2, 1, 16, 16), 100, dtype=torch.uint8)
    small = torch.full((2, 1, 8, 8), 100, dtype=torch.uint8)
    out = digits.preprocess(big)
    assert out.shape == (2, 1, 8, 8)
    assert torch.allclose(out, digits.preprocess(small), atol=1e-5)
    assert digits.preprocess(_batch(h=20, w=12)).shape == (3, 1, 8, 8)


def test_preprocess_accepts_grayscale_without_channel_axis(digits):
    x = _batch()
    assert torch.equal(digits.preprocess(x[:, 0]), digits.preprocess(x))


def test_preprocess_converts_rgb_uint8_to_gray(digits):
    x = torch.full((1, 3, 8, 8), 90, dtype=torch.uint8)
    assert torch.allclose(digits.preprocess(x), digits.preprocess(x[:, :1]), atol=1e-6)


# ---- embedder -----------------------------------------------------------------------------------

def test_embedder_output_shape(digits):
    emb = digits.embedder(16)
    assert isinstance(emb, PatchEmbed)
    assert emb(torch.zeros(3, 1, 8, 8)).shape == (3, digits.num_tokens, 16)


def test_embedder_interpolates_positions_for_local_crops(digits):
    emb = digits.embedder(16)
    out = emb(torch.zeros(2, 1, 4, 4))
    assert out.shape == (2, 4, 16)
    # zero input: tokens are the (interpolated) position table plus the conv bias
    pos = torch.nn.functional.interpolate(emb.pos, size=(2, 2), mode="bicubic", align_corners=False)
    expected = (pos + emb.proj.bias.view(1, -1, 1, 1)).flatten(2).transpose(1, 2)
    assert torch.allclose(out[0], expected[0], atol=1e-6)


def test_embedder_patch_size_option(digits):
    d = ImageDomain(patch_size=4, state=digits.state())
    assert d.num_tokens == 4 and d.target_dim == 16
    assert d.embedder(8)(torch.zeros(1, 1, 8, 8)).shape == (1, 4, 8)


def test_image_size_not_divisible_by_patch_is_user_error():
    d = ImageDomain(patch_size=2, state={**GRAY, "image_size": 9})
    with pytest.raises(UserError, match="not divisible"):
        d.embedder(16)


def test_target_patches_are_normalized(digits):
    x = torch.rand(2, 1, 8, 8)
    t = digits.target(x)
    assert t.shape == (2, digits.num_tokens, digits.target_dim)
    assert torch.allclose(t.mean(-1), torch.zeros(2, 16), atol=1e-5)


# ---- exported state -----------------------------------------------------------------------------

def test_state_roundtrip_preprocesses_identically(digits):
    s = digits.state()
    assert s == {"image_size": 8, "channels": 1, "mean": digits.mean, "std": digits.std, "patch_size": 2,
                 "views": {"crop_scale": (0.5, 1.0), "flip": 0.0}}  # digits are glyphs
    d = ImageDomain(state=s)
    assert d._splits is None and d.num_tokens == 16  # no data loaded; the derived patch comes with the state
    x = _batch(b=4, seed=3)
    assert torch.equal(d.preprocess(x), digits.preprocess(x))
    assert torch.equal(d.preprocess(_batch(h=12, w=12)), digits.preprocess(_batch(h=12, w=12)))
