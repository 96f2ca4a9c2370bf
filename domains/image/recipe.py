"""What the image domain chooses from the images it loads, when the settings are left unset (null): the views for
the kind of image. Natural images (photos, scans of scenes, textures: most pixels in mid-tones) take the
random-resized-crop range and horizontal flip of the small-image SSL recipes; glyphs and drawings (digits, letters,
line art, documents: most pixels near black or white) keep most of the image in a crop and are never mirrored, since
a mirrored glyph is another glyph. A set value always wins; the choice and its reason are printed once."""
VIEWS = {  # kind -> the settings it gets
    "natural": {"crop_scale": (0.2, 1.0), "flip": 0.5},
    "glyphs": {"crop_scale": (0.5, 1.0), "flip": 0.0},
}
SAMPLES = 64  # images the kind is judged from when the statistics were given rather than taken
BEFORE = VIEWS["glyphs"]  # what every run trained with before the choice: a state saved then resumes with it


def kind_of(share: float) -> str:
    return "natural" if share >= 0.5 else "glyphs"


def choose_views(share: float, crop_scale, flip) -> tuple[tuple, float, str | None]:
    """(crop_scale, flip, the line saying what was chosen and why, or None when both were set); `share`: the mid-tone
    share of the training pixels (sources.channel_stats)."""
    if crop_scale is not None and flip is not None:
        return tuple(crop_scale), flip, None
    kind = kind_of(share)
    crop_scale = tuple(VIEWS[kind]["crop_scale"]) if crop_scale is None else tuple(crop_scale)
    flip = VIEWS[kind]["flip"] if flip is None else flip
    what = "natural images" if kind == "natural" else "glyphs or drawings (a mirrored glyph is another glyph)"
    line = (f"multissl: views for {what}, {share:.0%} of the sampled pixels in mid-tones: domain.crop_scale="
            f"[{crop_scale[0]:g}, {crop_scale[1]:g}], domain.flip={flip:g}; set them to choose")
    return crop_scale, flip, line


def loaded(state: dict, crop_scale, flip) -> tuple[tuple, float]:
    """The views of a domain built from a saved state: those set, else the state's choice (BEFORE for a state saved
    before views were chosen), so a resumed run or another process never reads the data to choose again."""
    views = state.get("views") or BEFORE
    return (tuple(views["crop_scale"] if crop_scale is None else crop_scale),
            views["flip"] if flip is None else flip)
