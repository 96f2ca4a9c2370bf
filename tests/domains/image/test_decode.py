"""Reading users' image files as they come: every PIL mode and file format into the run's channels and size, the
EXIF orientation, the first frame of an animated GIF, transparency over white, 16-bit and float images scaled (not
clipped), and big JPEGs decoded at reduced scale."""
import numpy as np
import pytest
import torch
from PIL import Image

from multissl.domains.image import decode, read_image, resize_uint8

RED, WHITE = (255, 0, 0), (255, 255, 255)


def save(path, im, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


def palette(colours, size=(12, 12), index=0):
    im = Image.new("P", size, index)
    im.putpalette([v for c in colours for v in c] + [0] * (768 - 3 * len(colours)))
    return im


def red_images(tmp_path):
    """name -> a file that shows pure red (opaque), in every colour mode and format."""
    rgba = Image.new("RGBA", (12, 12), (*RED, 255))
    rgba.putpixel((0, 0), (0, 0, 255, 254))  # not fully opaque, so webp keeps the alpha band
    return {
        "rgb.png": save(tmp_path / "rgb.png", Image.new("RGB", (12, 12), RED)),
        "rgb.jpg": save(tmp_path / "rgb.jpg", Image.new("RGB", (12, 12), RED), quality=95),
        "rgb.bmp": save(tmp_path / "rgb.bmp", Image.new("RGB", (12, 12), RED)),
        "rgb.tiff": save(tmp_path / "rgb.tiff", Image.new("RGB", (12, 12), RED)),
        "rgba.png": save(tmp_path / "rgba.png", Image.new("RGBA", (12, 12), (*RED, 255))),
        "rgba.webp": save(tmp_path / "rgba.webp", rgba, lossless=True),
        "p.png": save(tmp_path / "p.png", palette([RED, (0, 255, 0)])),
        "p_transparent.png": save(tmp_path / "p_transparent.png", palette([RED, (0, 255, 0)]), transparency=1),
        "p.gif": save(tmp_path / "p.gif", palette([RED, (0, 255, 0)])),
        "cmyk.jpg": save(tmp_path / "cmyk.jpg", Image.new("CMYK", (12, 12), (0, 255, 255, 0)), quality=95),
        "cmyk.tiff": save(tmp_path / "cmyk.tiff", Image.new("CMYK", (12, 12), (0, 255, 255, 0))),
    }


def test_every_colour_mode_and_format_reads_as_red(tmp_path):
    for name, path in red_images(tmp_path).items():
        x = read_image(path, 3, 8)
        assert x.dtype == torch.uint8 and x.shape == (3, 8, 8), name
        r, g, b = x.float().mean((1, 2)).tolist()
        assert r > 245 and g < 12 and b < 12, (name, r, g, b)
        gray = read_image(path, 1, 8)  # red as ITU-R 601 luma: 0.299 * 255
        assert gray.shape == (1, 8, 8) and abs(gray.float().mean().item() - 76) < 4, name
    framed = np.zeros((12, 12, 4), np.uint8)  # a red square in a transparent frame stored as black
    framed[3:9, 3:9] = (*RED, 255)
    x = read_image(save(tmp_path / "framed.png", Image.fromarray(framed, "RGBA")), 3, 12)
    assert x[:, 5, 5].tolist() == list(RED) and x[:, 0, 0].tolist() == list(WHITE)


def test_transparency_is_composited_over_white(tmp_path):
    half = save(tmp_path / "half.png", Image.new("RGBA", (8, 8), (*RED, 128)))
    assert read_image(half, 3, 8)[:, 0, 0].tolist() == [255, 127, 127]  # red at alpha 128 over white
    clear = save(tmp_path / "clear.png", Image.new("RGBA", (8, 8), (0, 0, 0, 0)))  # black, fully transparent
    assert torch.all(read_image(clear, 3, 8) == 255)
    p = palette([RED, (0, 255, 0)], size=(8, 8), index=1)  # every pixel the transparent index
    assert torch.all(read_image(save(tmp_path / "p.png", p, transparency=1), 3, 8) == 255)
    la = Image.new("LA", (8, 8), (40, 255))
    la.putpixel((0, 0), (40, 0))
    x = read_image(save(tmp_path / "la.png", la), 1, 8)
    assert x.shape == (1, 8, 8) and x[0, 0, 0] == 255 and x[0, 1, 1] == 40


def test_single_band_modes_become_gray_or_three_equal_channels(tmp_path):
    ramp = np.tile(np.arange(0, 240, 20, dtype=np.uint8), (12, 1))  # [12 12]
    files = {"l.png": Image.fromarray(ramp, "L"), "l.jpg": Image.fromarray(ramp, "L"),
             "one.bmp": Image.fromarray(ramp > 100).convert("1"), "f.tif": Image.fromarray(ramp / np.float32(255)),
             "i.tif": Image.fromarray(ramp.astype(np.int32))}
    for name, im in files.items():
        path = save(tmp_path / name, im)
        gray, rgb = read_image(path, 1, 12), read_image(path, 3, 12)
        assert gray.shape == (1, 12, 12) and rgb.shape == (3, 12, 12)
        assert torch.equal(rgb, gray.expand(3, -1, -1)), name
        want = torch.from_numpy(np.where(ramp > 100, 255, 0) if name == "one.bmp" else ramp.astype(np.int64))
        assert (gray[0].long() - want).abs().max() <= (3 if name.endswith("jpg") else 0), name  # f.tif: [0, 1]


def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    a16 = (np.arange(144, dtype=np.uint16).reshape(12, 12) * 455)  # 0 .. 65065
    want = torch.from_numpy(np.rint(a16 / 257).astype(np.uint8))[None]
    for name in ("g16.png", "g16.tif"):
        im = Image.open(save(tmp_path / name, Image.fromarray(a16)))
        assert im.mode == "I;16"
        assert torch.equal(read_image(tmp_path / name, 1, 12), want), name
    assert torch.equal(read_image(save(tmp_path / "i.tif", Image.fromarray(a16.astype(np.int32))), 1, 12), want)
    f = a16.astype(np.float32) / 65535  # float images in [0, 1]
    got = read_image(save(tmp_path / "f.tif", Image.fromarray(f)), 3, 12)
    assert got.shape == (3, 12, 12) and (got[0].long() - want[0].long()).abs().max() <= 1
    dark = np.full((12, 12), 300, np.uint16)  # a dark 16-bit image stays dark: 300 / 257 -> 1
    assert torch.all(read_image(save(tmp_path / "dark.png", Image.fromarray(dark)), 1, 12) == 1)


def test_exif_orientation_is_applied(tmp_path):
    """Stored 60 wide x 30 high, left half red, right half blue, EXIF orientation 6 (shown rotated 90 degrees
    clockwise): upright it is 30 x 60, red on top."""
    x = np.zeros((30, 60, 3), np.uint8)
    x[:, :30], x[:, 30:] = RED, (0, 0, 255)
    im = Image.fromarray(x)
    exif = im.getexif()
    exif[0x0112] = 6
    path = save(tmp_path / "rotated.jpg", im, exif=exif, quality=95)
    with Image.open(path) as opened:
        upright = decode(opened, 3)
    assert upright.shape == (3, 60, 30)
    y = read_image(path, 3, 30)  # shorter side 30, centre crop of the 60 rows: 15 red rows, then 15 blue
    assert y.shape == (3, 30, 30)
    assert (y[0, :12] > 230).all() and (y[2, :12] < 25).all()
    assert (y[2, 18:] > 230).all() and (y[0, 18:] < 25).all()


def test_animated_gif_reads_its_first_frame(tmp_path):
    """The first of three frames: red, its left half transparent (palette index 0, black)."""
    first = palette([(0, 0, 0), RED], size=(10, 14), index=1)
    first.paste(0, (0, 0, 5, 14))
    frames = [first] + [Image.new("RGB", (10, 14), c).convert("P") for c in ((0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0, transparency=0)
    assert Image.open(path).n_frames == 3
    x = read_image(path, 3, 10)
    assert x.shape == (3, 10, 10) and x[:, 5, 8].tolist() == list(RED) and x[:, 5, 1].tolist() == list(WHITE)


def test_big_jpeg_is_decoded_at_reduced_scale_and_resized_as_any_file(tmp_path):
    """A 4000 x 3000 JPEG for a 224 px target decodes at 1/8 (500 x 375, never below 224), then the shorter side is
    resized to 224 with antialiasing and centre-cropped, as a full decode would be: the two agree to a few levels."""
    small = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    photo = Image.fromarray(small).resize((4000, 3000), Image.BICUBIC)
    path = save(tmp_path / "photo.jpg", photo, quality=90)
    with Image.open(path) as im:
        reduced = decode(im, 3, 224)
    assert reduced.shape == (3, 375, 500)
    x = read_image(path, 3, 224)
    with Image.open(path) as im:
        full = resize_uint8(decode(im, 3), 224)  # no size: no draft, the full 4000 x 3000 decode
    assert x.shape == full.shape == (3, 224, 224)
    assert (x.float() - full.float()).abs().mean() < 2
    with Image.open(path) as im:  # a target near the file's size decodes it whole
        assert decode(im, 3, 2000).shape == (3, 3000, 4000)


@pytest.mark.parametrize("size", [2, 7, 16])
def test_draft_never_decodes_below_the_target(tmp_path, size):
    path = save(tmp_path / "a.jpg", Image.new("RGB", (64, 48), RED))
    with Image.open(path) as im:
        assert min(decode(im, 3, size).shape[1:]) >= size
    assert read_image(path, 3, size).shape == (3, size, size)
