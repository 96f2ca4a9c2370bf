"""Decoder backends: PyAV and torchcodec read the same frames of real files (torchcodec in a child process given
FFmpeg's libraries: PyAV's bundled copies under their plain names), auto's choice, and each missing or unloadable
decoder's one-line error."""
import ctypes.util
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from multissl.domains.video import decode
from multissl.domains.video.sources import load
from multissl.errors import UserError

av = pytest.importorskip("av")

from videofiles import indices, write  # noqa: E402  (tests/videofiles.py)

FFMPEG = ("avutil", "avcodec", "avformat", "avdevice", "avfilter", "swscale", "swresample")
READS = [[0, 5, 5, 23], [12, 13], [29]]


def one_line(e) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


def ffmpeg_libs(tmp_path) -> Path | None:
    """A folder of links libavutil.so.<major> -> PyAV's bundled libavutil-<hash>.so.<version>, ..., or None. The
    bundled files are linked under their own names too: they find each other by those, next to the link."""
    bundled = Path(av.__file__).parent.parent / "av.libs"
    out = tmp_path / "ffmpeg"
    out.mkdir()
    for f in bundled.glob("*.so*"):
        (out / f.name).symlink_to(f)
    for name in FFMPEG:
        found = sorted(bundled.glob(f"lib{name}-*.so.*"))
        if not found:
            return None
        major = found[0].name.split(".so.")[1].split(".")[0]
        (out / f"lib{name}.so.{major}").symlink_to(found[0])
    return out


def child(code: str, libs: Path | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LD_LIBRARY_PATH": str(libs or "")}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_pyav_by_name_and_by_auto_and_an_unknown_name_is_an_error():
    assert decode.backend("pyav").name == decode.backend("auto").name == "pyav"
    with pytest.raises(UserError, match="domain.decoder must be one of auto, pyav, torchcodec") as e:
        decode.backend("ffmpeg")
    one_line(e)


def fake_torchcodec(ffmpeg_major_version):
    """A stand-in torchcodec module: 8 when it found FFmpeg 8's libraries, None when it found none."""
    tc = types.ModuleType("torchcodec")
    tc.ffmpeg_major_version, tc.decoders = ffmpeg_major_version, types.SimpleNamespace(VideoDecoder=object)
    return tc


def test_auto_without_pyav_takes_torchcodec_and_without_either_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    monkeypatch.setitem(sys.modules, "torchcodec", fake_torchcodec(8))
    assert decode.backend("auto").name == "torchcodec"
    with pytest.raises(UserError, match="needs PyAV") as e:
        decode.backend("pyav")
    assert "pip install 'multissl[video]'" in one_line(e)
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    with pytest.raises(UserError, match="needs PyAV") as e:
        decode.backend("auto")
    with pytest.raises(UserError, match="torchcodec is not installed") as e:
        decode.backend("torchcodec")
    assert "PyAV" in one_line(e)


def test_torchcodec_that_cannot_load_ffmpeg_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec", fake_torchcodec(None))
    with pytest.raises(UserError, match="torchcodec cannot load FFmpeg") as e:
        decode.backend("torchcodec")
    assert "pip install 'multissl[video]'" in one_line(e)

    def broken(name):  # what an older torchcodec raises at import when no FFmpeg library is found
        raise RuntimeError("Could not load libtorchcodec. Likely causes:\n  1. FFmpeg is not properly installed")
    monkeypatch.setattr(decode.importlib, "import_module", broken)
    with pytest.raises(UserError, match="torchcodec cannot load FFmpeg") as e:
        decode.backend("torchcodec")
    assert "Could not load libtorchcodec" in one_line(e)


needs_torchcodec = pytest.mark.skipif(importlib.util.find_spec("torchcodec") is None, reason="torchcodec not installed")


@needs_torchcodec
@pytest.mark.skipif(ctypes.util.find_library("avutil") is not None, reason="this system has FFmpeg's libraries")
def test_the_real_torchcodec_without_ffmpeg_stops_with_the_install_line(tmp_path):
    write(tmp_path / "v" / "a.mp4", 24)
    code = ("from multissl.domains.video.sources import load\n"
            f"load({{'path': {str(tmp_path / 'v')!r}}}, None, 8, 'torchcodec')")
    r = child(code, None)
    assert r.returncode != 0 and f"UserError: {tmp_path / 'v' / 'a.mp4'}: torchcodec cannot load FFmpeg" in r.stderr


@needs_torchcodec
def test_torchcodec_probes_and_reads_the_frames_pyav_reads(tmp_path):
    libs = ffmpeg_libs(tmp_path)
    if libs is None:
        pytest.skip("PyAV's wheel does not bundle FFmpeg here")
    root = tmp_path / "videos"
    write(root / "train" / "a" / "0.mp4", 24)
    write(root / "train" / "b" / "1.mp4", 30, gop=5)
    write(root / "train" / "b" / "3.mp4", 30, codec="libx264")  # B-frames: decoded out of display order
    write(root / "test" / "a" / "2.mkv", 24, codec="libvpx-vp9") if "libvpx-vp9" in av.codecs_available else None
    code = f"""
import io, json, torch
from multissl.domains.video.sources import load
from multissl.domains.video.decode import backend
clips = load({{"path": {str(root)!r}}}, None, 8, "torchcodec")
out = {{s: {{"backend": c.backend.name, "frames": [c.frames(i) for i in range(len(c))],
             "fps": [c.fps(i) for i in range(len(c))], "labels": c.labels, "size": c.size,
             "reads": [c.read(i, idx).tolist() for i in range(len(c)) for idx in {READS} if max(idx) < c.frames(i)]}}
       for s, c in clips.items()}}
data = open({str(root / "train" / "a" / "0.mp4")!r}, "rb").read()
frames, _ = backend("torchcodec").read(io.BytesIO(data), [3, 7])  # an HF Video cell's bytes
out["bytes"] = torch.stack(frames).tolist()
print(json.dumps(out))
"""
    r = child(code, libs)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    import torch
    ref = load({"path": str(root)}, None, 8, "pyav")
    for split, c in ref.items():
        g = got[split]
        assert g["backend"] == "torchcodec"
        assert g["frames"] == [c.frames(i) for i in range(len(c))] and g["labels"] == c.labels
        assert g["fps"] == pytest.approx([c.fps(i) for i in range(len(c))]) and g["size"] == c.size
        reads = [(i, idx) for i in range(len(c)) for idx in READS if max(idx) < c.frames(i)]
        for (i, idx), x in zip(reads, g["reads"], strict=True):
            x = torch.tensor(x, dtype=torch.uint8)  # [k 3 s s]
            assert indices(x) == idx
            assert (x.float() - c.read(i, idx).float()).abs().mean() < 2  # the same frames, colour conversion aside
    assert indices(torch.tensor(got["bytes"], dtype=torch.uint8)) == [3, 7]


def test_the_domain_hands_domain_decoder_to_the_files(tmp_path):
    from multissl.domains.video import VideoDomain
    write(tmp_path / "v" / "a.mp4", 24)
    d = VideoDomain(decoder="opencv", data={"path": str(tmp_path / "v")}, cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="domain.decoder must be one of auto, pyav, torchcodec, got 'opencv'"):
        d.dataset("train")
    d = VideoDomain(decoder="pyav", data={"path": str(tmp_path / "v")}, cache_dir=str(tmp_path))
    assert d.dataset("train") is not None and d._clips["train"].backend.name == "pyav"
