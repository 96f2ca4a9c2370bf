"""Video shards (domains.shards): video files each as stored (form "files", the .gif items listed in the info, read
per item as the files are) or clips each an .npy of uint8 [t c h w] (form "arrays", read per item)."""
import io

import numpy as np

from multissl.errors import UserError

from ..shards import Payloads, Records, Shards, file_records, source_bytes
from .sources import ArrayClips, FileClips, ItemClips, load


class ShardArrays(ArrayClips):
    """The items of "arrays" shards (domains.shards), each one clip uint8 [t c h w] saved by np.save, loaded when
    read (VideoDomain.records writes them)."""

    def __init__(self, shards, split: str, size: int | None, min_frames: int):
        self.items, self.labels, self.classes = Payloads(shards, split), shards.labels(split), shards.classes
        first = self.clip(0)  # [t c h w]: every item of a split has its shape
        if len(first) < min_frames:
            raise UserError(f"{self.items.name(0)}: clips of {len(first)} frames, fewer than the {min_frames} a "
                            f"clip needs; lower domain.frames or domain.stride")
        self.length, self.size = len(first), size or min(first.shape[-2:])
        self.shape = (first.shape[1], self.size, self.size)

    def frames(self, i: int) -> int:
        return self.length

    def clip(self, i: int) -> np.ndarray:
        return np.load(self.items.source(i), allow_pickle=False)


def shards(where: str, size: int | None, min_frames: int, skip_bad: bool, decoder: str) -> dict:
    """Shards of video files or of clips (domains.shards), read per item as the files or arrays they came from."""
    opened, out = Shards(where, "video"), {}
    for split in opened.splits:
        out[split] = (ShardArrays(opened, split, size, min_frames) if opened.form == "arrays" else
                      ItemClips(Payloads(opened, split), opened.labels(split), opened.classes, size, min_frames,
                                skip_bad, decoder, opened.info.get("gif", {}).get(split, ())))
        size = out[split].shape[-1]  # the test split is read at the training size
    return out


def records(data: dict) -> dict:
    """data.path's videos as shard items, in the order and with the labels and classes training reads: video files (a
    folder's, an HF Video column's) each as stored, the .gif ones listed in the info; clips of arrays each an .npy."""
    splits = load(data, None, 1)
    if not isinstance(splits["train"], FileClips):
        return {s: Records("arrays", len(c), lambda c=c: (npy_bytes(c.clip(j)) for j in range(len(c))), c.labels,
                           c.classes) for s, c in splits.items()}
    gifs = {s: [j for j in range(len(c)) if c._is_gif(j)] for s, c in splits.items()}  # META keeps one info
    return {s: file_records(len(c), lambda j, c=c: source_bytes(c._source(j)), c.labels,
                            {name: k for k, name in enumerate(c.classes or [])}, {"gif": gifs})
            for s, c in splits.items()}


def npy_bytes(a: np.ndarray) -> bytes:
    """An array as the bytes of its .npy file."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()
