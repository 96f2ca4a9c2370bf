"""Decoding video files: a backend probes a file's metadata (frame count, rate, size; no decoding) and reads the
frames a clip needs, seeking instead of decoding from the start. PyAV (it bundles FFmpeg) or torchcodec (it uses
the system's FFmpeg libraries); GIFs through Pillow. A frame's index is its time x the stream's average rate."""
import importlib
import io
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from multissl.errors import UserError, reason

BACKENDS = ("auto", "pyav", "torchcodec")
NO_FFMPEG = "install FFmpeg's shared libraries (4 to 8), or use PyAV, which bundles them: pip install 'multissl[video]'"
NO_DECODER = ("reading video files needs PyAV, which is not installed; install it with: pip install 'multissl[video]' "
              "(or install torchcodec with the system's FFmpeg libraries)")


class PyAV:
    """A decoder backend: probe(source) -> (frames, fps or None, (h, w)); read(source, wanted sorted distinct) ->
    (frames uint8 [3 h w] each, how many frames were decoded). source: a path, or a file-like object (an HF Video
    cell)."""
    name = "pyav"

    def probe(self, source):
        return av_probe(source)

    def read(self, source, wanted: list[int]):
        return av_read(source, wanted)


class TorchCodec:
    name = "torchcodec"

    def __init__(self, module):
        self.VideoDecoder = module.VideoDecoder

    def _open(self, source):
        if isinstance(source, io.IOBase):
            source.seek(0)
        # approximate: frame k sits at k / average rate, as for PyAV, and opening does not scan the whole file
        return self.VideoDecoder(str(source) if isinstance(source, Path) else source, seek_mode="approximate")

    def probe(self, source):
        m = self._open(source).metadata
        n = m.num_frames or (round(m.duration_seconds * m.average_fps) if m.duration_seconds and m.average_fps else 0)
        return int(n), float(m.average_fps) if m.average_fps else None, (m.height, m.width)

    def read(self, source, wanted: list[int]):
        frames = self._open(source).get_frames_at(indices=wanted).data  # [k 3 h w] uint8
        return list(frames), len(wanted)


def backend(name: str = "auto") -> PyAV | TorchCodec:
    """The decoder domain.decoder names; auto: PyAV when installed, else torchcodec. A missing or unloadable one is
    a UserError with the install line (the install's fault, never a bad file to skip)."""
    if name not in BACKENDS:
        raise UserError(f"domain.decoder must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name in ("auto", "pyav"):
        try:
            importlib.import_module("av")
            return PyAV()
        except ImportError:
            if name == "pyav":
                raise UserError(NO_DECODER) from None
    try:
        tc = importlib.import_module("torchcodec")
    except ImportError:
        if name == "auto":
            raise UserError(NO_DECODER) from None
        raise UserError("domain.decoder=torchcodec but torchcodec is not installed; pip install torchcodec (it needs "
                        "the system's FFmpeg libraries), or use PyAV: pip install 'multissl[video]'") from None
    except Exception as e:  # an older torchcodec fails at import when it finds no FFmpeg
        raise UserError(f"torchcodec cannot load FFmpeg ({reason(e).splitlines()[0]}); {NO_FFMPEG}") from None
    if getattr(tc, "ffmpeg_major_version", 0) is None:  # a newer one imports, and its video decoders fail later
        raise UserError(f"torchcodec cannot load FFmpeg (no FFmpeg library found); {NO_FFMPEG}")
    return TorchCodec(tc.decoders)


def av_probe(source) -> tuple[int, float | None, tuple[int, int]]:
    """Frame count from the stream header, else duration x rate, else by demuxing packets (no decoding)."""
    import av
    with av.open(source) as c:
        if not c.streams.video:
            return 0, None, (0, 0)
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate
        n = s.frames
        if not n and rate and (s.duration or c.duration):
            seconds = s.duration * s.time_base if s.duration else Fraction(c.duration, av.time_base)
            n = round(seconds * rate)
        if not n:
            n = sum(1 for p in c.demux(s) if p.size)
        return n, float(rate) if rate else None, (s.codec_context.height, s.codec_context.width)


def av_read(source, wanted: list[int], seek: bool = True) -> tuple[list[torch.Tensor], int]:
    """Frames `wanted` (sorted, distinct) as uint8 [3 h w] each, and how many were decoded: from the keyframe at or
    before the first to the last. A frame's index is its pts x rate, so an index no frame has (a variable-rate gap)
    takes the frame shown at that time, and one past the stream's end its last frame."""
    import av
    with av.open(source) as c:
        s = c.streams.video[0]
        rate, tb, start = s.average_rate or s.guessed_rate, s.time_base, s.start_time or 0
        seek = seek and rate is not None and wanted[0] > 0
        if seek:  # half a frame early: timestamps rounded to the time base still land at or after it
            c.seek(start + int((wanted[0] - Fraction(1, 2)) / (rate * tb)), stream=s, backward=True, any_frame=False)
        got, prev, pos, count, k = {}, None, 0, 0, -1
        for frame in c.decode(s):
            count += 1
            k = k + 1 if frame.pts is None or rate is None else round((frame.pts - start) * tb * rate)
            if seek and count == 1 and (frame.pts is None or k > wanted[0]):
                break  # the seek landed past the first frame wanted (an imprecise index): decode from the start
            while pos < len(wanted) and wanted[pos] <= k:
                got[wanted[pos]] = frame if wanted[pos] == k or prev is None else prev
                pos += 1
            if pos == len(wanted):
                break
            prev = frame
        else:  # the stream ended: a header may count a second or so more than it holds, a truncated file far more
            if prev is not None and wanted[-1] - k > (rate or 1):
                raise ValueError(f"the stream ends at frame {k}, before frame {wanted[-1]} (a truncated file?)")
            got.update({w: prev for w in wanted[pos:]} if prev is not None else {})
        if len(got) == len(wanted):  # [3 h w] each; a frame taken twice is converted once
            rgb = {id(f): torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1) for f in got.values()}
            return [rgb[id(got[w])] for w in wanted], count
    if not seek:
        raise ValueError("no frame decodes")
    if isinstance(source, io.IOBase):
        source.seek(0)
    frames, more = av_read(source, wanted, seek=False)
    return frames, count + more


def gif_probe(path: Path) -> tuple[int, float | None, tuple[int, int]]:
    """GIF frame k is the k-th image: GIF delays vary per frame, so the first one's gives the rate."""
    from PIL import Image
    with Image.open(path) as im:
        ms = im.info.get("duration") or 0
        return getattr(im, "n_frames", 1), 1000 / ms if ms else None, (im.height, im.width)


def gif_read(path: Path, wanted: list[int]) -> tuple[list[torch.Tensor], int]:
    from PIL import Image
    out = []
    with Image.open(path) as im:
        for k in wanted:
            im.seek(k)
            out.append(torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))  # [3 h w]
    return out, wanted[-1] + 1
