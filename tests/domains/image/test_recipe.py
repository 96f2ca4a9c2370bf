"""The views the image domain chooses from its images when domain.crop_scale / domain.flip are unset: natural images
get the small-image SSL crop range and flips, glyphs keep most of the image and are never mirrored; a set value
wins; the choice is printed, saved in the state, and never re-derived by a domain built from a state."""
import numpy as np
import pytest
import torch
from PIL import Image

from multissl.domains.image import ImageDomain
from multissl.domains.image import domain as image_domain
from multissl.domains.image import recipe, sources
from multissl.domains.image.sources import TensorImages


def folder(root, images):
    for i, a in enumerate(images):
        d = root / "train" / "ab"[i % 2]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(d / f"{i:03d}.png")
    return root


def smooth_photos(n=12, size=24, seed=0):
    """Photo-like RGB: smooth random fields, nearly every value a mid-tone."""
    rng = np.random.default_rng(seed)
    return [np.asarray(Image.fromarray(rng.integers(60, 200, (4, 4, 3), dtype=np.uint8)).resize((size, size),
                                                                                               Image.BICUBIC))
            for _ in range(n)]


def strokes(n=12, size=24, seed=0):
    """Glyph-like gray: black ground, a few white bars."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = np.zeros((size, size), np.uint8)
        r = int(rng.integers(2, size - 6))
        a[r:r + 3, 3:size - 3] = 255
        a[3:size - 3, r:r + 2] = 255
        out.append(a)
    return out


def test_mid_tone_share_counts_values_between_a_tenth_and_nine_tenths():
    x = torch.tensor([[[0, 25, 26, 128], [229, 230, 255, 100]]], dtype=torch.uint8)  # [1 2 4]
    _, _, share = sources.channel_stats(TensorImages(x[None], torch.zeros(1, dtype=torch.long)))
    assert share == pytest.approx(4 / 8)


@pytest.mark.parametrize("make,kind", [(smooth_photos, "natural"), (strokes, "glyphs")])
def test_unset_views_are_chosen_from_the_images_and_said(make, kind, tmp_path, capsys):
    d = ImageDomain(data={"path": str(folder(tmp_path, make()))})
    d.dataset("train")
    assert (d.crop_scale, d.flip) == (recipe.VIEWS[kind]["crop_scale"], recipe.VIEWS[kind]["flip"])
    err = capsys.readouterr().err
    assert ("views for natural images" if kind == "natural" else "views for glyphs or drawings") in err
    assert f"domain.flip={d.flip:g}; set them to choose" in err
    assert d.state()["views"] == {"crop_scale": d.crop_scale, "flip": d.flip}


def test_digits_are_glyphs_and_keep_the_settings_they_trained_with(capsys):
    d = ImageDomain()
    d.dataset("train")
    assert (d.crop_scale, d.flip) == ((0.5, 1.0), 0.0) and "views for glyphs" in capsys.readouterr().err


def test_a_set_value_wins_and_only_the_unset_one_is_chosen(tmp_path, capsys):
    root = folder(tmp_path, smooth_photos())
    d = ImageDomain(flip=0.0, data={"path": str(root)})
    d.dataset("train")
    assert d.flip == 0.0 and d.crop_scale == (0.2, 1.0)
    both = ImageDomain(flip=0.25, crop_scale=(0.3, 0.9), data={"path": str(root)})
    capsys.readouterr()
    both.dataset("train")
    assert (both.crop_scale, both.flip) == ((0.3, 0.9), 0.25) and "views for" not in capsys.readouterr().err


def test_a_domain_from_a_state_takes_its_views_and_reads_no_image_to_choose(tmp_path, monkeypatch):
    root = folder(tmp_path, smooth_photos())
    first = ImageDomain(data={"path": str(root)})
    first.dataset("train")
    monkeypatch.setattr(image_domain, "channel_stats", lambda *a, **k: pytest.fail("images read to choose"))
    other = ImageDomain(data={"path": str(root)}, state=first.state())
    other.dataset("train")
    assert (other.crop_scale, other.flip) == (first.crop_scale, first.flip) == ((0.2, 1.0), 0.5)
    old = {k: v for k, v in first.state().items() if k != "views"}  # saved before views were chosen
    resumed = ImageDomain(data={"path": str(root)}, state=old)
    resumed.dataset("train")
    assert (resumed.crop_scale, resumed.flip) == (recipe.BEFORE["crop_scale"], recipe.BEFORE["flip"])


def test_views_drawn_before_any_data_was_read_name_the_fix():
    d = ImageDomain(image_size=8, channels=1, patch_size=2)
    with pytest.raises(Exception, match="set domain.crop_scale and domain.flip"):
        d.draw(torch.zeros(1, 8, 8, dtype=torch.uint8), torch.Generator().manual_seed(0))


def test_statistics_given_without_views_still_choose_them_from_the_images(tmp_path):
    d = ImageDomain(data={"path": str(folder(tmp_path, smooth_photos()))})
    d.mean, d.std = [0.5] * 3, [0.25] * 3  # given, so the statistics' pass (which measures the share) does not run
    d.dataset("train")
    assert (d.crop_scale, d.flip) == ((0.2, 1.0), 0.5)
