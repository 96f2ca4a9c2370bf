"""Batched image views: each batched apply against torchvision applied to one sample at a time (an independent
reference, and what the views were before they were batched), a whole batch against its samples applied alone,
and the draws against the generator."""
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from multissl.data import stack_draws
from multissl.domains import augment as A
from multissl.domains.image import ImageDomain, TensorImages, auto_patch


def rgb(n=6, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_colour_ops_match_torchvision_per_sample():
    x = rgb()
    order = torch.stack([torch.randperm(4, generator=torch.Generator().manual_seed(i)) for i in range(len(x))])
    factors = torch.tensor([[0.7, 1.3, 0.6, 0.1], [1.2, 0.8, 1.4, -0.15], [1.0, 1.0, 1.0, 0.0],
                            [0.9, 1.1, 0.0, 0.05], [1.5, 0.5, 1.2, -0.08], [0.8, 0.9, 1.1, 0.12]])
    got = A.color_jitter(x, order, factors)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(len(x)):
        ref = x[i]
        for op in order[i].tolist():
            ref = ops[op](ref, float(factors[i, op])).clamp(0, 1)
        torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=0)
    assert torch.equal(got[2], x[2])  # identity factors leave a sample exactly as it was


def test_gray_colour_ops_use_brightness_and_contrast_only():
    x = rgb()[:, :1]
    order, factors = torch.tensor([[1, 0, 2, 3]] * len(x)), torch.tensor([[0.7, 1.4, 1.0, 0.0]] * len(x))
    ref = TF.adjust_brightness(TF.adjust_contrast(x[3], 1.4).clamp(0, 1), 0.7).clamp(0, 1)
    torch.testing.assert_close(A.color_jitter(x, order, factors)[3], ref, atol=1e-6, rtol=0)


def test_blur_matches_torchvision_per_sample_and_sigma_zero_is_identity():
    x = rgb(size=20)
    sigma = torch.tensor([0.0, 0.3, 1.0, 1.7, 2.0, 0.0])
    got = A.gaussian_blur(x, sigma)
    for i, s in enumerate(sigma.tolist()):
        if s == 0:
            assert torch.equal(got[i], x[i])
        else:
            k = max(3, 2 * int(torch.ceil(torch.tensor(2 * s))) + 1)
            torch.testing.assert_close(got[i], TF.gaussian_blur(x[i], [k, k], [s, s]), atol=1e-5, rtol=0)


def test_blur_kernel_is_capped_on_small_images():
    x = rgb(n=2, size=8)
    got = A.gaussian_blur(x, torch.tensor([2.0, 0.0]))  # torchvision's 9-wide kernel does not fit 8 pixels
    torch.testing.assert_close(got[0], TF.gaussian_blur(x[0], [7, 7], [2.0, 2.0]), atol=1e-5, rtol=0)


def test_crop_of_the_whole_image_at_its_size_is_the_image_and_a_box_is_its_pixels():
    x = rgb(n=2, size=12)
    boxes = torch.tensor([[[0, 0, 12, 12], [2, 4, 6, 6]], [[0, 0, 12, 12], [6, 0, 6, 6]]], dtype=torch.float32)
    whole = A.resized_crops(x, boxes[:, :1], 12)
    torch.testing.assert_close(whole[:, 0], x, atol=1e-6, rtol=0)
    part = A.resized_crops(x, boxes[:, 1:], 6)  # a 6 x 6 box read at its own size: its pixels
    torch.testing.assert_close(part[0, 0], x[0, :, 2:8, 4:10], atol=1e-6, rtol=0)
    torch.testing.assert_close(part[1, 0], x[1, :, 6:12, 0:6], atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [20, 8, 31])
def test_crops_match_torchvision_resized_crop_enlarging_and_shrinking(size):
    x = rgb(n=3, size=20)
    boxes = torch.tensor([[[2, 3, 10, 7]], [[0, 0, 20, 20]], [[5, 1, 14, 18]]], dtype=torch.float32)
    got = A.resized_crops(x, boxes, size)
    for i in range(3):
        t, l, h, w = boxes[i, 0].long().tolist()
        ref = TF.resized_crop(x[i], t, l, h, w, [size, size], antialias=True)
        torch.testing.assert_close(got[i, 0], ref, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def rgb_domain():
    x = (rgb(n=12, size=16, seed=3) * 255).round().to(torch.uint8)
    d = ImageDomain(blur=0.5, local_crops=2, jitter_p=1.0, grayscale=0.5, patch_size=2, crop_scale=(0.5, 1.0), flip=0.5)
    d._splits = {"train": TensorImages(x, torch.zeros(12, dtype=torch.long))}
    d.channels, d.image_size = 3, 16
    d._fit_stats(d._splits["train"])
    return d


def batch_of(domain, n=12, n_global=2):
    items = [domain.draw(domain.dataset("train")[i]["x"], torch.Generator().manual_seed(i), n_global)
             for i in range(n)]
    return stack_draws(items)


def test_batched_apply_equals_each_sample_applied_alone(rgb_domain):
    drawn = batch_of(rgb_domain)
    views = rgb_domain.apply(drawn)
    assert [tuple(v.shape) for v in views] == [(12, 3, 16, 16)] * 2 + [(12, 3, 8, 8)] * 2
    for i in range(12):
        alone = rgb_domain.apply({k: t[i:i + 1] for k, t in drawn.items()})
        for v, a in zip(views, alone):
            torch.testing.assert_close(v[i], a[0], atol=1e-5, rtol=0)


def test_apply_composes_the_per_sample_reference(rgb_domain):
    """One view rebuilt with torchvision on one sample from its drawn parameters."""
    drawn = batch_of(rgb_domain)
    views = rgb_domain.apply(drawn)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(4):
        x = drawn["image"][i].float() / 255
        top, left, h, w = drawn["box"][i, 0].tolist()
        ref = TF.resized_crop(x, int(top), int(left), int(h), int(w), [16, 16], antialias=True)
        if drawn["flip"][i, 0]:
            ref = ref.flip(-1)
        for op in drawn["order"][i, 0].tolist():
            f = float(drawn["factor"][i, 0, op])
            if f != A.IDENTITY[op]:
                ref = ops[op](ref, f).clamp(0, 1)
        if drawn["gray"][i, 0]:
            ref = ref.mean(0, keepdim=True).expand(3, -1, -1)
        s = float(drawn["sigma"][i, 0])
        if s > 0:
            k = min(max(3, 2 * int(torch.ceil(torch.tensor(2 * s))) + 1), 15)
            ref = TF.gaussian_blur(ref, [k, k], [s, s])
        torch.testing.assert_close(views[0][i], rgb_domain._normalize(ref), atol=1e-4, rtol=0)


def test_draws_consume_the_generator_as_the_per_sample_views_did(rgb_domain):
    """The parameters come from rng in the old per-sample order: crop, flip, jitter, grayscale, blur."""
    x = rgb_domain.dataset("train")[0]["x"]
    g = torch.Generator().manual_seed(7)
    d = rgb_domain.draw(x, g, 1)
    g2 = torch.Generator().manual_seed(7)
    box = A.crop_box(16, 16, rgb_domain.crop_scale, rgb_domain.crop_ratio, g2)
    flip = A.coin(g2, rgb_domain.flip)
    assert d["box"][0].tolist() == box and bool(d["flip"][0]) == flip


def test_views_run_on_another_dtype_device_path(rgb_domain):
    drawn = batch_of(rgb_domain, n=3)
    drawn = {k: t.double() if t.is_floating_point() else t for k, t in drawn.items()}
    views = rgb_domain.apply(drawn)
    assert all(torch.isfinite(v).all() for v in views)


@pytest.mark.parametrize("size, patch", [(8, 2), (28, 4), (32, 4), (64, 8), (96, 12), (224, 28), (30, 5), (6, 2)])
def test_unset_patch_size_leaves_at_most_8_x_8_tokens(size, patch):
    assert auto_patch(size) == patch
