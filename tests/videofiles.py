"""Real encoded test videos (PyAV) whose frames read back as their index: frame k's top half is gray 8 * (k % 32),
its bottom half 8 * (k // 32)."""
import numpy as np
import torch


def pattern(k: int, h: int, w: int) -> np.ndarray:
    x = np.empty((h, w, 3), np.uint8)  # [h w 3]
    x[: h // 2], x[h // 2:] = 8 * (k % 32), 8 * (k // 32)
    return x


def indices(x: torch.Tensor) -> list[int]:
    """Decoded frames uint8 [k c s s] -> the index each shows; a flat area must come back within 3 gray levels."""
    s = x.shape[-2]
    top = x[:, :, s // 8: 3 * s // 8].float().mean(dim=(1, 2, 3)) / 8  # [k]
    bottom = x[:, :, 5 * s // 8: 7 * s // 8].float().mean(dim=(1, 2, 3)) / 8
    assert (top - top.round()).abs().max() < 3 / 8 and (bottom - bottom.round()).abs().max() < 3 / 8
    return (top.round() + 32 * bottom.round()).long().tolist()


def write(path, n: int, h: int = 32, w: int = 48, gop: int = 12, codec: str = "mpeg4"):
    """n frames of `pattern` at 24 fps, mpeg4 (in every PyAV wheel), a keyframe at least every `gop` frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    import av
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=24)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size, s.bit_rate = gop, 4_000_000  # a high rate keeps flat areas within 2 levels
        for k in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(pattern(k, h, w), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


