"""Where images come from, as {split: dataset of {"x": uint8 [c s s], "y": class id or -1}}: the embedded digits,
a folder of image files, the Image column of an HF dataset (saved, or in the local cache), or images in memory
(arrays, tensors, PIL images: `memory_images`). Nothing is decoded at load: a file, row or in-memory image is read
when its item is asked for, the automatic size reads only the headers of a sample, and the normalisation statistics
take one image at a time. Every image becomes the run's channels and size whatever its mode, EXIF orientation or
format (`decode`)."""
import statistics
import sys
import zipfile
from functools import partial

import numpy as np
import torch

from multissl.errors import UserError, reason

from ..memory import describe, is_array, memory_split, numpy, unpack

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SINGLE_BAND = {"1", "L", "LA", "La", "I", "F"}  # and every "I;16..." mode; LA: gray with alpha
MAX_AUTO_SIZE = 224  # the standard ImageNet-sized input; see choose_size
SURVEY = 64  # files whose headers choose the automatic size and channels
STATS_SAMPLES = 2048  # images the normalisation statistics are taken from
MID_TONES = (26, 229)  # 10 % to 90 % of the 8-bit range
SKIP = "(or set data.skip_bad=true to skip unreadable samples)"


class TensorImages(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y  # uint8 [n c h w], int64 [n] (-1 = unlabeled)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": int(self.y[i])}


def digits_split():
    """sklearn's 1797 8x8 digits as uint8 images; a fixed 80/20 split (seeded, not the run seed)."""
    d = digits()
    x, y = torch.from_numpy(d["x"])[:, None], torch.from_numpy(d["y"]).long()  # [n 1 8 8], [n]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_test = len(x) // 5
    return {"train": TensorImages(x[perm[n_test:]], y[perm[n_test:]]),
            "test": TensorImages(x[perm[:n_test]], y[perm[:n_test]])}


def digits() -> dict:
    """{"x": uint8 [1797 8 8] on 0..255, "y": int64 [1797]}: sklearn's digits, kept in the cache once read, so that a
    run on the embedded default does not import scikit-learn (seconds of every process's start)."""
    from importlib.metadata import version

    from ..cache import default_cache_dir, save_npz
    path = default_cache_dir() / f"digits_sklearn-{version('scikit-learn')}.npz"
    try:
        with np.load(path) as z:
            return {"x": z["x"], "y": z["y"]}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):  # not there yet, or damaged: read it again
        pass
    from sklearn.datasets import load_digits
    d = load_digits()
    out = {"x": (d.images * (255 / 16)).round().astype(np.uint8), "y": d.target.astype(np.int64)}
    try:
        save_npz(path, out)
    except OSError:  # a read-only cache: read it from scikit-learn each time
        pass
    return out


# ---- reading one image --------------------------------------------------------------------------------------

def read_image(path, channels: int, size: int, name: str | None = None) -> torch.Tensor:
    """A file (a path, or a file-like such as an HF row's bytes; `name` names it in errors) -> uint8
    [channels size size]: decoded (`decode`), its shorter side resized to `size` with antialiasing, centre-cropped."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            x = decode(im, channels, size)
    except Exception as e:
        raise UserError(f"cannot read image {name or path}: {e.__class__.__name__}: {reason(e, 100)}; remove or fix "
                        f"the file {SKIP}") from None
    return resize_uint8(x, size)


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to `size`, then centre crop: every sample gets the same [c size size]."""
    if x.shape[-2:] == (size, size):
        return x
    import torchvision.transforms.v2.functional as TF
    x = TF.resize(x, size, antialias=True)
    return TF.center_crop(x, [size, size])


def decode(im, channels: int, size: int | None = None) -> torch.Tensor:
    """An opened PIL image (its first frame, for animations) -> uint8 [channels h w], upright.

    A JPEG at least twice `size` on both sides is decoded at 1/2, 1/4 or 1/8 scale (`Image.draft`, libjpeg's scaled
    decoding), never below `size`, so a phone photo costs a fraction of its full decode; the resize to `size` follows
    as for any file. The EXIF orientation is applied. Colour and bit depth:
      - transparency (RGBA, LA, P or RGB with a transparent colour, ...) is composited over white, what a viewer shows
        on a page: transparent pixels store arbitrary colours, and a fixed background gives them one meaning;
      - 16-bit images ("I;16") scale their full range 0..65535 to 0..255; 32-bit integer and float images ("I",
        "F") scale the range their values fit: [0, 1] floats, 0..255, 0..65535, else their own min..max;
      - palette, CMYK, YCbCr and 1-bit images convert to RGB (or to luma, ITU-R 601, for one channel); a single band
        becomes three equal channels when the run is RGB."""
    from PIL import Image, ImageOps
    if size:
        im.draft(None, (size, size))  # JPEG only; other formats ignore it
    ImageOps.exif_transpose(im, in_place=True)
    mode = im.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        a = _to_8bit(np.asarray(im), mode)[None]  # [1 h w]
    else:
        if im.has_transparency_data:
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        im = im.convert("L" if channels == 1 else "RGB")
        a = np.asarray(im, dtype=np.uint8)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # [c h w]
    x = torch.from_numpy(np.array(a, order="C"))  # a copy: PIL's arrays are read-only
    return x.expand(channels, -1, -1).contiguous() if x.shape[0] != channels else x


def _to_8bit(a: np.ndarray, mode: str) -> np.ndarray:
    """A high-depth single band [h w] -> uint8 0..255 (see decode for the ranges)."""
    a = a.astype(np.float32)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        lo, top = 0.0, 65535.0
    elif lo >= 0 and hi <= (1 if mode == "F" else 255):
        lo, top = 0.0, 1.0 if mode == "F" else 255.0
    elif lo >= 0 and hi <= 65535:
        lo, top = 0.0, 65535.0
    else:
        top = hi if hi > lo else lo + 1
    return np.clip(np.rint((a - lo) * (255 / (top - lo))), 0, 255).astype(np.uint8)


# ---- the automatic size and channels ------------------------------------------------------------------------

def spread(n: int, k: int) -> list[int]:
    """Up to k indices evenly spread over range(n), first and last included."""
    return torch.linspace(0, n - 1, min(n, k)).long().tolist() if n else []


def survey(count: int, source, skip_bad: bool, k: int | None = None) -> list[tuple[str, int]]:
    """(mode, shorter side) of up to k (default SURVEY) images evenly spread over `count`, from their headers: PIL's
    Image.open reads the header and decodes nothing. `source(i)` -> (what Image.open reads, its name for errors). An
    unreadable file is an error naming it, or with skip_bad left out."""
    from PIL import Image
    found, k = [], k or SURVEY
    for i in spread(count, k):
        src, name = source(i)
        try:
            with Image.open(src) as im:
                found.append((im.mode, min(im.size)))
        except Exception as e:
            if not skip_bad:
                raise UserError(f"cannot read image {name}: {e.__class__.__name__}: {reason(e, 100)}; remove or fix "
                                f"the file {SKIP}") from None
    if not found:
        raise UserError(f"none of the {len(spread(count, k))} sampled images is readable (e.g. {source(0)[1]}); "
                        f"fix the files or point data.path at readable images")
    return found


def is_single_band(mode: str) -> bool:
    return mode in SINGLE_BAND or mode.startswith("I;16")


def choose_size(found: list[tuple[str, int]], image_size: int | None, channels: int | None, total: int,
                seen: str = "the headers of"):
    """(image_size, channels, one line saying how) for the unset ones, from `survey`'s sample (`seen` says of what).

    Size: the median shorter side of the sample, capped at MAX_AUTO_SIZE. The median, so a few thumbnails, panoramas
    or one odd file that sorts first do not set the size of a whole folder; the lower median, so an even sample
    downsizes rather than enlarges. The cap, because compute and memory per sample grow with the
    square of the side while SSL recipes train at 224 px and below (phone photos would otherwise give 3024 px inputs
    and a 378 px patch), and the default encoder and `auto_patch` were tuned for up to 8 x 8 tokens (224 -> 28 px
    patches). Channels: 1 only when every sampled image is single-band (one stray gray file among photos must not
    make a folder gray), else 3."""
    how = []
    if image_size is None:
        median = statistics.median_low(side for _, side in found)
        image_size = min(median, MAX_AUTO_SIZE)
        capped = f", capped at {MAX_AUTO_SIZE}" if median > MAX_AUTO_SIZE else ""
        how.append(f"domain.image_size={image_size} (their median shorter side, {median} px{capped})")
    if channels is None:
        gray = all(is_single_band(mode) for mode, _ in found)
        channels = 1 if gray else 3
        how.append(f"domain.channels={channels} ({'all' if gray else 'not all'} single-band)")
    line = (f"multissl: from {seen} {len(found)} of the {total} training images: {', '.join(how)}; set "
            f"domain.image_size= and domain.channels= to choose")
    return image_size, channels, line


# ---- in-memory images ---------------------------------------------------------------------------------------

MEMORY = ("uint8 images [n, h, w, c] or [n, h, w] (or floats in [0, 1]; channels first too), or a list or Dataset of "
          "images (arrays or PIL images), as (images, labels) for labels")


def memory_images(obj, image_size: int | None, channels: int | None) -> tuple[dict, int, int]:
    """In-memory images (MEMORY) -> ({"train": Files}, image_size, channels): each image made the run's channels and
    size as a file is (`memory_image`) when its item is asked for; the unset size and channels chosen as for files
    (`choose_size`), from the images `survey` would sample."""
    samples, labels = unpack(obj)
    if not (is_array(samples) and samples.ndim in (3, 4) or isinstance(samples, (list, torch.utils.data.Dataset))):
        raise UserError(f"data.path holds {describe(samples)}; the image domain reads {MEMORY}")
    if not len(samples):
        raise UserError(f"data.path holds no images ({describe(samples)}); the image domain reads {MEMORY}")
    whole = numpy(samples) if is_array(samples) else None  # no copy
    if whole is not None and whole.dtype.kind == "f":
        unit_range(whole, "data.path")  # once, before any item is read
    sample = (to_pil(samples[i], f"image {i} of data.path") for i in spread(len(samples), SURVEY))
    found = [(im.mode, min(im.size)) for im in sample]
    if image_size is None or channels is None:
        image_size, channels, line = choose_size(found, image_size, channels, len(samples), "the shapes of")
        print(line, file=sys.stderr)
    read = partial(memory_image, channels=channels, size=image_size)
    return {"train": memory_split(samples, labels, read, "image")}, image_size, channels


def memory_image(x, channels: int, size: int, name: str) -> torch.Tensor:
    """One in-memory image -> uint8 [channels size size], exactly as the same pixels read from a file (read_image)."""
    return resize_uint8(decode(to_pil(x, name), channels, size), size)


def to_pil(x, name: str):
    """An image as an array or tensor — uint8 or floats in [0, 1]; [h w c] (c 1, 3 or 4), [c h w] (c 1 or 3) or
    [h w] — or a PIL image (copied: `decode` transposes in place) -> a PIL image; anything else a UserError naming
    `name`."""
    from PIL import Image
    if isinstance(x, Image.Image):
        return x.copy()
    if not is_array(x):
        raise UserError(f"{name} is {describe(x)}; the image domain reads images as arrays [h, w, c] or [h, w], or PIL "
                        f"images")
    a = numpy(x)
    if a.dtype.kind == "f":
        unit_range(a, name)
        a = np.rint(a * 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise UserError(f"{name} holds {a.dtype}; the image domain reads uint8 0..255 or floats in [0, 1]: convert "
                        f"it, e.g. x.astype(np.uint8) for values 0..255")
    last = a.ndim == 3 and a.shape[-1] in (1, 3, 4) and a.shape[-1] <= a.shape[0]  # [h w c], else maybe [c h w]
    if a.ndim == 3 and not last and a.shape[0] in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or a.ndim == 3 and a.shape[-1] in (3, 4)):
        raise UserError(f"{name} is shaped {list(a.shape)}; the image domain reads [h, w, c] with c 1, 3 or 4, "
                        f"[c, h, w] or [h, w]")
    return Image.fromarray(np.ascontiguousarray(a))


def unit_range(a: np.ndarray, name: str):
    """Float pixels must lie in [0, 1] (NaN does not)."""
    if a.size and not (a.min() >= 0 and a.max() <= 1):
        raise UserError(f"{name} holds floats from {a.min():g} to {a.max():g}; the image domain reads floats in [0, 1] "
                        f"or uint8 0..255: scale them (x / 255) or pass uint8")


# ---- normalisation statistics -------------------------------------------------------------------------------

def channel_stats(ds, k: int | None = None) -> tuple[list[float], list[float], float]:
    """Per-channel mean and std (unbiased, as torch.std) of the pixels in [0, 1] of up to k (default STATS_SAMPLES)
    training images evenly spread over ds, and the share of their values in MID_TONES (what tells natural images
    from glyphs: recipe.py), taken one image at a time: float64 sums and sums of squares, so memory holds one image
    whatever the number or size of the images."""
    total = sq = None
    n = mid = 0
    for i in spread(len(ds), k or STATS_SAMPLES):
        x = ds[i]["x"]  # uint8 [c h w]
        mid += int(((x >= MID_TONES[0]) & (x <= MID_TONES[1])).sum())
        x = x.double().div_(255).flatten(1)  # [c h*w]; the uint8 image freed before the next is read
        total = x.sum(1) if total is None else total + x.sum(1)
        sq = x.square().sum(1) if sq is None else sq + x.square().sum(1)
        n += x.shape[1]
    mean = total / n
    var = ((sq - n * mean.square()) / max(n - 1, 1)).clamp_min(0)
    return mean.tolist(), var.sqrt().clamp_min(1e-3).tolist(), mid / (n * len(mean))
