"""Folders of real-world images: the automatic size and channels from a sample of headers (bounded, printed), every
file read into them, normalisation statistics one image at a time, and a domain built from another's state that
re-derives nothing."""
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

import multissl.domains.image.domain as image_domain
import multissl.domains.image.sources as sources
from multissl.domains.image import ImageDomain, TensorImages
from multissl.errors import UserError

RED = (255, 0, 0)


def save(path, im, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


def photo(w, h, mode="RGB", seed=0):
    """A smooth random picture (an upsampled noise field), w x h, in `mode`."""
    small = np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BILINEAR).convert(mode)


@pytest.fixture
def mixed(tmp_path):
    """Every mode and format, sizes 10 to 40 px: a small grayscale file sorts first, then RGB(A), palette, CMYK,
    16-bit, an EXIF-rotated JPEG and an animated GIF. Shorter sides: 8, 14, 16, 20, 20, 24, 24, 28, 30, 30, 32, 36
    -> lower median 24."""
    root = tmp_path / "mixed"
    save(root / "00_gray.png", Image.new("L", (8, 8), 90))
    save(root / "01_rgba.png", Image.new("RGBA", (14, 20), (*RED, 255)))
    save(root / "02_p.gif", Image.new("RGB", (16, 16), RED).convert("P"))
    save(root / "03_cmyk.jpg", Image.new("CMYK", (20, 26), (0, 255, 255, 0)), quality=95)
    save(root / "04_rgb.webp", photo(30, 20), quality=90)
    save(root / "05_la.png", Image.new("LA", (24, 24), (50, 255)))
    save(root / "06_rgb.bmp", photo(24, 40, seed=1))
    save(root / "07_i16.tif", Image.fromarray(np.full((28, 28), 40000, np.uint16)))
    rotated = photo(40, 30, seed=2)
    exif = rotated.getexif()
    exif[0x0112] = 8
    save(root / "08_rotated.jpg", rotated, exif=exif)
    save(root / "09_f.tiff", Image.fromarray(np.full((30, 30), 0.5, np.float32)))
    frames = [Image.new("RGB", (32, 32), c) for c in (RED, (0, 0, 255))]
    frames[0].save(root / "10_anim.gif", save_all=True, append_images=frames[1:], duration=50)
    save(root / "11_rgb.png", photo(36, 40, seed=3))
    return root


def test_mixed_folder_chooses_median_size_and_rgb_and_reads_every_file(mixed, capsys):
    d = ImageDomain(data={"path": str(mixed)})
    tr = d.dataset("train")
    assert d.channels == 3 and d.image_size == 24  # not 1 x 8 x 8 from the gray file that sorts first
    err = capsys.readouterr().err
    assert "domain.image_size=24" in err and "domain.channels=3" in err and "12 of the 12" in err
    xs = {f.name: tr[i]["x"] for i, f in enumerate(tr.files)}
    assert all(x.dtype == torch.uint8 and x.shape == (3, 24, 24) for x in xs.values())
    for name in ("01_rgba.png", "02_p.gif", "03_cmyk.jpg", "10_anim.gif"):
        r, g, b = xs[name].float().mean((1, 2)).tolist()
        assert r > 245 and g < 12 and b < 12, name
    assert torch.all(xs["00_gray.png"] == 90) and torch.all(xs["05_la.png"] == 50)
    assert torch.all(xs["07_i16.tif"] == round(40000 / 257)) and torch.all(xs["09_f.tiff"] == 128)
    assert len(d.mean) == len(d.std) == 3 and d.patch == 3  # 24 px -> 8 x 8 tokens


def test_folder_of_single_band_files_is_gray(tmp_path, capsys):
    save(tmp_path / "a.png", Image.new("L", (12, 12), 10))
    save(tmp_path / "b.png", Image.new("LA", (12, 16), (20, 255)))
    save(tmp_path / "c.tif", Image.fromarray(np.full((12, 12), 1000, np.uint16)))
    save(tmp_path / "d.tif", Image.fromarray(np.full((14, 12), 0.25, np.float32)))
    save(tmp_path / "e.bmp", Image.new("1", (12, 12), 1))
    d = ImageDomain(data={"path": str(tmp_path)})
    tr = d.dataset("train")
    assert d.channels == 1 and d.image_size == 12 and "all single-band" in capsys.readouterr().err
    assert [tr[i]["x"].shape for i in range(5)] == [(1, 12, 12)] * 5


def test_set_size_and_channels_read_no_header(mixed, monkeypatch):
    monkeypatch.setattr(image_domain, "survey", lambda *a, **k: pytest.fail("headers read"))
    d = ImageDomain(image_size=16, channels=1, data={"path": str(mixed)})
    tr = d.dataset("train")
    assert d.image_size == 16 and d.channels == 1 and tr[2]["x"].shape == (1, 16, 16)


def test_only_the_size_unset_keeps_the_channels_asked(mixed, capsys):
    d = ImageDomain(channels=1, data={"path": str(mixed)})
    d.dataset("train")
    err = capsys.readouterr().err
    assert d.channels == 1 and d.image_size == 24
    assert "domain.image_size=24" in err and "domain.channels=1 (" not in err


def test_survey_reads_a_bounded_sample_of_headers_only(tmp_path, monkeypatch):
    files = [save(tmp_path / f"{i:03d}.png", Image.new("RGB", (10 + i, 12), RED)) for i in range(100)]
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda src, *a, **k: opened.append(src) or real_open(src, *a, **k))
    from PIL import ImageFile
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("a survey decoded pixels"))
    found = sources.survey(len(files), lambda i: (files[i], str(files[i])), skip_bad=False)
    assert len(found) == len(opened) == sources.SURVEY
    assert opened[0] == files[0] and opened[-1] == files[-1]  # evenly spread, ends included


def test_unreadable_sampled_file_is_user_error_or_skipped(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")  # sorts first
    save(tmp_path / "b.png", Image.new("RGB", (12, 12), RED))
    save(tmp_path / "c.png", Image.new("RGB", (16, 14), RED))
    with pytest.raises(UserError, match="a.jpg") as e:
        ImageDomain(data={"path": str(tmp_path)}).dataset("train")
    assert "skip_bad" in str(e.value) and "\n" not in str(e.value)
    d = ImageDomain(data={"path": str(tmp_path), "skip_bad": True})
    tr = d.dataset("train")
    assert d.image_size == 12 and tr[0]["skipped"] == 1 and tr[0]["x"].shape == (3, 12, 12)


# ---- big photos ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three 4000 x 3000 JPEGs: a landscape, a portrait by EXIF orientation, a grayscale one."""
    root = tmp_path_factory.mktemp("photos")
    save(root / "a.jpg", photo(4000, 3000), quality=85)
    rotated = photo(4000, 3000, seed=1)
    exif = rotated.getexif()
    exif[0x0112] = 6
    save(root / "b.jpg", rotated, exif=exif, quality=85)
    save(root / "c.jpg", photo(4000, 3000, "L", seed=2), quality=85)
    return root


class Alive(torch.utils.data.Dataset):
    """A dataset that counts how many of the samples it handed out are still alive (weak references)."""

    def __init__(self, ds):
        self.ds, self.refs, self.most = ds, [], 0

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        item = self.ds[i]
        self.refs = [r for r in self.refs if r() is not None] + [weakref.ref(item["x"])]
        self.most = max(self.most, len(self.refs))
        return item


def test_big_photos_get_224_px_and_statistics_one_image_at_a_time(photos, capsys):
    d = ImageDomain(data={"path": str(photos)})
    d._fit_stats = lambda ds: setattr(d, "_mid_share", 1.0)  # the statistics are taken below, through a counting
    # view of the split
    tr = d.dataset("train")
    err = capsys.readouterr().err
    assert d.image_size == 224 and d.channels == 3 and d.patch == 28
    assert "domain.image_size=224 (their median shorter side, 3000 px, capped at 224)" in err
    alive = Alive(tr)
    ImageDomain._fit_stats(d, alive)
    assert alive.most == 1  # never more than the image being summed
    x = torch.stack([tr[i]["x"] for i in range(3)]).float() / 255  # [3 3 224 224]
    assert d.mean == pytest.approx(x.mean((0, 2, 3)).tolist(), abs=1e-6)
    assert d.std == pytest.approx(x.std((0, 2, 3)).tolist(), abs=1e-6)
    assert tr[1]["x"].shape == (3, 224, 224)


def test_statistics_equal_torch_on_a_stacked_set():
    x = torch.randint(0, 256, (40, 3, 9, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std, _ = sources.channel_stats(TensorImages(x, torch.zeros(40, dtype=torch.long)))
    xf = x.float() / 255
    assert mean == pytest.approx(xf.mean((0, 2, 3)).tolist(), abs=1e-6)
    assert std == pytest.approx(xf.std((0, 2, 3)).tolist(), abs=1e-6)
    mean, _, _ = sources.channel_stats(TensorImages(x, torch.zeros(40, dtype=torch.long)), k=5)  # 5 evenly spread
    assert mean == pytest.approx(xf[[0, 9, 19, 29, 39]].mean((0, 2, 3)).tolist(), abs=1e-6)


# ---- a domain from another's state --------------------------------------------------------------------------

def test_domain_built_from_state_rederives_nothing(mixed, monkeypatch):
    first = ImageDomain(data={"path": str(mixed)})
    tr = first.dataset("train")
    monkeypatch.setattr(image_domain, "survey", lambda *a, **k: pytest.fail("headers read for the size"))
    monkeypatch.setattr(image_domain, "channel_stats", lambda *a, **k: pytest.fail("statistics recomputed"))
    monkeypatch.setattr(image_domain, "auto_patch", lambda *a, **k: pytest.fail("patch re-derived"))
    other = ImageDomain(data={"path": str(mixed)}, state=first.state())
    tr2 = other.dataset("train")
    assert other.state() == first.state() and other.num_classes == first.num_classes
    assert len(tr2) == len(tr) and all(torch.equal(tr2[i]["x"], tr[i]["x"]) for i in range(len(tr)))


def test_state_wins_over_what_the_data_would_give(mixed, monkeypatch):
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda src, *a, **k: opened.append(src) or real_open(src, *a, **k))
    state = {"image_size": 16, "channels": 1, "mean": [0.5], "std": [0.25], "patch_size": 4}
    d = ImageDomain(data={"path": str(mixed)}, state=state)
    tr = d.dataset("train")
    assert opened == []  # loading opened no file, not even for a header
    assert d.state() == {**state, "views": {"crop_scale": (0.5, 1.0), "flip": 0.0}}  # as before views were chosen
    assert tr[3]["x"].shape == (1, 16, 16)
