"""domains/files.py scan: the image, audio and video folders' listing, one os.scandir walk that lists what the
rglob expression the domains used before lists, in its order."""
import os
from pathlib import Path

import pytest

from multissl.domains import files
from multissl.domains.audio.sources import AUDIO_EXT, OTHER_AUDIO_EXT
from multissl.domains.files import scan
from multissl.domains.image.sources import IMAGE_EXT
from multissl.domains.video.sources import VIDEO_EXT

EXTENSIONS = [IMAGE_EXT, AUDIO_EXT | OTHER_AUDIO_EXT, VIDEO_EXT, {".png"}]
NAMES = ["a.png", "b.PNG", "c.Jpeg", "notes.txt", "d.png.txt", "e.txt.png", ".png", "..png", ".hidden.png", "f.png.",
         "noext", "a/1.png", "a-b/1.png", "a b/1.png", "A/2.png", "deep/x/y/z/3.wav", "deep/x/4.WAV", "deep/5.flac",
         "deep/x/6.MP4", "deep/7.gif", "deep/8.m4a", ".git/9.png", "dir.png/10.png", "été/ü.png", "a/b/c/11.Webp"]


@pytest.fixture
def tree(tmp_path) -> Path:
    """Nested and hidden folders, mixed-case and double suffixes, dot names, a folder named like an image, links to
    a file, to folders (one named like an image) and to nothing."""
    root = tmp_path / "data"
    for name in NAMES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "link.png").symlink_to(root / "a.png")
    (root / "linked").symlink_to(root / "a", target_is_directory=True)
    (root / "linkdir.png").symlink_to(root / "a", target_is_directory=True)
    (root / "broken.png").symlink_to(root / "gone.png")
    return root


@pytest.mark.parametrize("ext", EXTENSIONS)
def test_scan_lists_what_rglob_lists_in_its_order(tree, ext):
    expected = sorted(f for f in tree.rglob("*") if f.suffix.lower() in ext and f.is_file())
    assert expected and scan(tree, ext) == expected
    assert scan(str(tree), ext) == expected  # a folder given as text


def test_scan_leaves_out_folders_and_broken_links_that_the_old_listing_kept(tree):
    before = sorted(f for f in tree.rglob("*") if f.suffix.lower() in IMAGE_EXT)  # the image domain's, before scan
    now = scan(tree, IMAGE_EXT)
    assert [f for f in before if f in now] == now  # nothing added, the order kept
    assert set(before) - set(now) == {tree / "dir.png", tree / "linkdir.png", tree / "broken.png"}  # none readable
    assert tree / "link.png" in now and tree / "dir.png" / "10.png" in now and tree / "..png" in now
    assert tree / ".png" not in now and tree / "linked" / "1.png" not in now  # a dot name; no linked folder entered


def test_scan_sorts_part_by_part_as_paths_do(tree):
    listed = [str(f.relative_to(tree)) for f in scan(tree, {".png"})]
    assert listed.index("a/1.png") < listed.index("a b/1.png") < listed.index("a-b/1.png")  # not as strings


def test_scan_passes_over_an_unreadable_folder_and_lists_nothing_for_a_missing_one(tree, monkeypatch):
    readable = scan(tree, IMAGE_EXT)
    real = os.scandir

    def scandir(path):
        if Path(path).name == "deep":
            raise PermissionError(13, "Permission denied", path)
        return real(path)
    monkeypatch.setattr(files.os, "scandir", scandir)
    assert scan(tree, IMAGE_EXT) == [f for f in readable if "deep" not in f.parts] != readable  # deep/7.gif gone
    assert scan(tree / "nothere", IMAGE_EXT) == [] and scan(tree / "a.png", IMAGE_EXT) == []


def test_scan_makes_paths_only_for_the_files_it_lists(tree, monkeypatch):
    made = []
    monkeypatch.setattr(files, "Path", lambda p: made.append(p) or Path(p))
    listed = scan(tree, VIDEO_EXT)
    assert listed == [tree / "deep/7.gif", tree / "deep/x/6.MP4"] and sorted(Path(p) for p in made) == listed
