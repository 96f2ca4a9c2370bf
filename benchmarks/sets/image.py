"""Image sets for the suites: the image domain's embedded 8 x 8 digits (glyphs), and three sets cut from the photos
and textures bundled in scikit-image's and scikit-learn's wheels (nothing is downloaded): colour photo patches
labelled by their photo, grayscale texture patches labelled by their source, and shapes drawn over photo backgrounds
labelled by the shape. Each is generated from numpy's default_rng(0) and written once (`written`) as PNG files in
train/<class>/ and test/<class>/ under the folder it is given; generated data, never committed.

The held-out split is fixed and disjoint: training crops come from the left SPLIT of every source image's width,
held-out crops (and held-out shape backgrounds) from the rest, so no held-out pixel is ever seen in training.
Images are written at the set's size, so the domain's automatic size and channels pick it (one channel for the
grayscale set) without any override."""
import numpy as np

from . import Set, sized, written

SPLIT = 0.7  # share of each source image's width (from the left) that training crops come from
SHAPES = ("circle", "ring", "triangle", "square", "star", "cross", "bar", "half")


def photos() -> dict[str, np.ndarray]:
    """Colour photos bundled in the wheels (skimage.data reads these from its own folder, without pooch)."""
    from skimage import data
    from sklearn.datasets import load_sample_images
    china, flower = load_sample_images().images
    return {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee(),
            "rocket": data.rocket(), "motorcycle": data.stereo_motorcycle()[0], "retina": data.retina(),
            "hubble": data.hubble_deep_field(), "ihc": data.immunohistochemistry(), "china": china, "flower": flower}


def textures() -> dict[str, np.ndarray]:
    """Grayscale images bundled with scikit-image: three textures and five scenes with a texture of their own."""
    from skimage import data
    return {n: getattr(data, n)() for n in ("brick", "grass", "gravel", "moon", "camera", "coins", "cell", "text")}


def region(image: np.ndarray, split: str) -> np.ndarray:
    """The columns of `image` that `split`'s crops come from: train and test never share a pixel."""
    cut = round(image.shape[1] * SPLIT)
    return image[:, :cut] if split == "train" else image[:, cut:]


def crop(rng, image: np.ndarray, side: tuple[float, float], size: int):
    """A random square crop whose side (px) is drawn from `side` (capped by the image), resized to size x size."""
    from PIL import Image
    h, w = image.shape[:2]
    hi = min(side[1], h, w)
    s = int(rng.integers(min(side[0], hi), hi + 1))
    y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
    return Image.fromarray(image[y:y + s, x:x + s]).resize((size, size), Image.LANCZOS)


def save(root, split: str, label: str, i: int, im) -> None:
    folder = root / split / label
    folder.mkdir(parents=True, exist_ok=True)
    im.save(folder / f"{i:05d}.png")


def crops(images, size: int, side, counts: dict, scale: float):
    """write(root) for crops labelled by their source image; side(image) -> the (lo, hi) crop side in px."""
    def write(root):
        rng = np.random.default_rng(0)
        for split, n in counts.items():
            for label, image in images().items():
                part = region(image, split)
                for i in range(sized(n, scale, 2)):
                    save(root, split, label, i, crop(rng, part, side(image), size))
    return write


def ngon(k: int, radii=(1.0,)) -> list:
    """k-fold polygon around the origin whose vertices cycle through `radii` (a star: two radii)."""
    n = k * len(radii)
    return [(radii[j % len(radii)] * np.cos(2 * np.pi * j / n), radii[j % len(radii)] * np.sin(2 * np.pi * j / n))
            for j in range(n)]


def outline(shape: str) -> list[list]:
    """The shape's polygons around the origin, radius about 1: the filled one first, then a hole if any."""
    a, b = 0.95, 0.3  # arm length and half-width of the cross and the bar
    return {"circle": [ngon(48)], "ring": [ngon(48), ngon(48, (0.55,))], "triangle": [ngon(3)],
            "square": [ngon(4)], "star": [ngon(5, (1.0, 0.4))], "bar": [[(-a, -b), (a, -b), (a, b), (-a, b)]],
            "cross": [[(b, a), (b, b), (a, b), (a, -b), (b, -b), (b, -a), (-b, -a), (-b, -b), (-a, -b), (-a, b),
                       (-b, b), (-b, a)]],
            "half": [[(np.cos(t), np.sin(t)) for t in np.linspace(0, np.pi, 24)]]}[shape]


def draw(rng, background, shape: str, size: int):
    """`shape` in a random colour, size, rotation and position over `background`; drawn at 4x and downsized so its
    edges are antialiased as a photo's would be."""
    from PIL import Image, ImageDraw
    big = 4 * size
    r, turn = rng.uniform(0.15, 0.35) * big, rng.uniform(0, 2 * np.pi)
    centre = rng.uniform(r, big - r, 2)
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    mask = Image.new("L", (big, big))
    for k, poly in enumerate(outline(shape)):
        points = np.asarray(poly) @ rot.T * r + centre
        ImageDraw.Draw(mask).polygon([tuple(p) for p in points], fill=0 if k else 255)
    colour = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3)))
    return Image.composite(colour, background, mask.resize((size, size), Image.BOX))


def shapes(size: int, counts: dict, scale: float):
    """write(root) for SHAPES over crops of the photos, each background from the photo regions of its split."""
    def write(root):
        rng, pool = np.random.default_rng(0), list(photos().values())
        for split, n in counts.items():
            parts = [region(p, split) for p in pool]
            for label in SHAPES:
                for i in range(sized(n, scale, 2)):
                    part = parts[rng.integers(len(parts))]
                    side = min(part.shape[:2])
                    save(root, split, label, i, draw(rng, crop(rng, part, (0.3 * side, side), size), label, size))
    return write


def share(lo: float, hi: float):
    """Crop sides as shares of the image's shorter side: every crop holds a similar part of its scene."""
    return lambda image: (lo * min(image.shape[:2]), hi * min(image.shape[:2]))


def folder(root, write) -> list[str]:
    return [f"data.path={written(root, write)}"]


SETS = {
    "digits": Set(about="scikit-learn's 1797 8 x 8 grayscale handwritten digits (the domain's default); label = digit",
                  prepare=lambda root, scale: []),
    "photos": Set(about="32 x 32 RGB crops (random place and scale) of 10 bundled photos; label = the photo",
                  prepare=lambda root, scale: folder(root, crops(photos, 32, share(0.1, 0.35),
                                                                 {"train": 400, "test": 100}, scale))),
    "textures": Set(about="48 x 48 grayscale crops of 8 bundled images (brick, grass, gravel, moon, camera, coins, "
                          "cell, text); label = the source image",
                    prepare=lambda root, scale: folder(root, crops(textures, 48, lambda image: (48, 96),
                                                                   {"train": 400, "test": 125}, scale))),
    "shapes": Set(about="64 x 64 RGB: one of 8 shapes of random colour, size, rotation and place over a bundled-photo "
                        "crop; label = the shape",
                  prepare=lambda root, scale: folder(root, shapes(64, {"train": 500, "test": 125}, scale))),
}
