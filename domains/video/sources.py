"""Where videos come from, as {split: Clips}: a folder of video files (class subfolders label them, train/ and test/
honoured), a .npz / .npy array of clips (memory-mapped), an HF dataset (a saved folder or hf:<name>) with a Video or
array column, shards of any of them (domains.shards), or clips in memory (`memory_clips`).
Items are references: the domain reads the frames it needs, so files are probed at load (metadata, no decoding) and
decoded from the keyframe before the first frame asked for. Bad input is a one-line UserError naming the file."""
import sys
from pathlib import Path

import numpy as np
import torch

from multissl.errors import UserError, reason

from ..arrays import is_npz, npz_names, npz_to_npy, open_npy
from ..files import hf_splits, labelled, locate, scan, split_folders
from ..image import resize_uint8
from ..memory import describe, encode_labels, in_memory, is_array, numpy, unpack
from ..rows import Rows
from .decode import backend, gif_probe, gif_read

VIDEO_EXT = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif"}
WHAT = "a folder of video files, a .npz/.npy array of clips, a saved HF dataset or shards"
SKIP = "or set data.skip_bad=true to skip unreadable or too short videos"
ARRAYS = ("video", "label", "test_video", "test_label")  # what a .npz may hold


class Clips(torch.utils.data.Dataset):
    """A split of videos. Item i -> {"x": i, "y": class id or -1}: x is a reference, the domain reads the frames it
    needs. classes: list[str] or None; labels: list[int] (-1 = unlabelled); skipped: bad files left out at load;
    shape: (c, h, w) of every frame `read` returns."""
    classes: list[str] | None = None
    skipped = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i) -> dict:
        return {"x": i, "y": self.labels[i]}

    def frames(self, i: int) -> int:
        raise NotImplementedError

    def fps(self, i: int) -> float | None:
        """Frames per second when the source says (files); None for arrays."""
        return None

    def read(self, i: int, idx: list[int]) -> torch.Tensor:
        """Frames idx of video i, in that order (repeats allowed): uint8 [len(idx) c s s]."""
        raise NotImplementedError


class ArrayClips(Clips):
    """Clips in an array, uint8 [n t c h w]; read copies the frames asked for (and resizes them when size is set)."""

    def __init__(self, video, labels=None, classes=None, size: int | None = None):
        self.video = np.asarray(video)  # uint8 [n t c h w]
        self._describe(labels, classes, size)

    def _describe(self, labels, classes, size: int | None):
        n, _, c, h, w = self.video.shape
        self.labels = [int(v) for v in labels] if labels is not None else [-1] * n
        self.classes, self.size = classes, size
        self.shape = (c, size, size) if size else (c, h, w)

    def frames(self, i: int) -> int:
        return self.video.shape[1]

    def clip(self, i: int) -> np.ndarray:
        """Clip i as stored, uint8 [t c h w]."""
        return self.video[i]

    def read(self, i: int, idx: list[int]) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(self.clip(i)[list(idx)]))  # [k c h w]
        return resize_uint8(x, self.size) if self.size else x


class MappedClips(ArrayClips):
    """Clips memory-mapped from a .npy file (`domains.arrays`): memory holds the frames read, never the array. Pickled
    for loader workers as the file's path; each process maps it again on its first read."""

    def __init__(self, file: Path, video: np.ndarray, where: str, name: str | None, labels, classes, size: int):
        """video: the file mapped and checked (`clip_array`), uint8 [n t c h w]; where and name as for clip_array."""
        self.file, self.where, self.name, self._video = Path(file), where, name, video
        self._describe(labels, classes, size)

    @property
    def video(self) -> np.ndarray:
        if self._video is None:
            self._video = clip_array(open_npy(self.file), self.where, self.name)  # [n t c h w], a view of the map
        return self._video

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_video": None}


class FileClips(Clips):
    """Video files decoded lazily by `decoder` (decode.backend: PyAV or torchcodec); GIFs with PIL. Each file is
    probed once here; files that are unreadable, empty or shorter than min_frames are an error, or with skip_bad left
    out and counted. size None: the shorter side of the first readable file, so every frame is [3 size size].
    `decoded` counts the frames this object's reads decoded in this process (the seeking tests read it)."""

    def __init__(self, files: list[Path], labels: list[int], classes, size: int | None, min_frames: int,
                 skip_bad: bool, decoder: str = "auto"):
        self.files = list(files)
        video = next((j for j in range(len(self.files)) if not self._is_gif(j)), None)
        self.backend = None
        if video is not None:  # a missing decoder is the install's fault, never a bad file to skip
            try:
                self.backend = backend(decoder)
            except UserError as e:
                raise UserError(f"{self._name(video)}: {e}") from None
        probed = {}  # index -> (frames, fps, (h, w))
        for j in range(len(self.files)):
            try:
                probed[j] = self._probe(j, min_frames)
            except UserError:
                if not skip_bad:
                    raise
        if not probed:
            raise UserError(f"none of the {len(self.files)} videos ({self._name(0)}, ...) is readable and at least "
                            f"{min_frames} frames long; fix them or lower domain.frames / domain.stride")
        self.skipped = len(self.files) - len(probed)
        self.files, self.labels = [self.files[j] for j in probed], [labels[j] for j in probed]
        self._frames, self._fps, hw = zip(*probed.values())  # per kept file
        self.classes, self.size = classes, size or min(hw[0])
        self.shape, self.decoded = (3, self.size, self.size), 0

    def frames(self, i: int) -> int:
        return self._frames[i]

    def fps(self, i: int) -> float | None:
        return self._fps[i]

    def _source(self, j: int):
        return self.files[j]

    def _name(self, j: int) -> str:
        return str(self.files[j])

    def _is_gif(self, j: int) -> bool:
        return isinstance(self.files[j], Path) and self.files[j].suffix.lower() == ".gif"

    def _probe(self, j: int, min_frames: int) -> tuple[int, float | None, tuple[int, int]]:
        """(frames, fps or None, (h, w)) from the file's metadata; a UserError when it cannot make a clip."""
        probe = gif_probe if self._is_gif(j) else self.backend.probe
        try:
            n, fps, hw = probe(self._source(j))
        except Exception as e:  # the decoders' own errors: a truncated, corrupt or non-video file
            raise UserError(f"cannot read video {self._name(j)}: {reason(e)}; remove or fix the file, {SKIP}") \
                from None
        if n <= 0:
            raise UserError(f"video {self._name(j)} has no frames; remove or re-encode it, {SKIP}")
        if n < min_frames:
            raise UserError(f"video {self._name(j)} has {n} frames, fewer than the {min_frames} a clip needs; lower "
                            f"domain.frames or domain.stride, {SKIP}")
        return n, fps, hw

    def read(self, i: int, idx: list[int]) -> torch.Tensor:
        idx = [int(k) for k in idx]
        if not idx or min(idx) < 0 or max(idx) >= self._frames[i]:
            raise IndexError(f"frames {idx} of {self._name(i)}, which has {self._frames[i]}")
        wanted = sorted(set(idx))
        decode = gif_read if self._is_gif(i) else self.backend.read
        try:
            got, n = decode(self._source(i), wanted)
        except Exception as e:  # a file that probed fine can still hold corrupt packets
            raise UserError(f"cannot decode video {self._name(i)}: {reason(e)}; remove or re-encode the file") from None
        self.decoded += n
        # frame by frame: a stream may change resolution midway
        x = torch.stack([resize_uint8(f, self.size) for f in got])  # [u 3 s s], u = len(wanted)
        where = {k: p for p, k in enumerate(wanted)}
        return x[[where[k] for k in idx]]  # [k 3 s s]


class ItemClips(FileClips):
    """Videos stored as items, each a file (bytes, or a path) decoded like a file: an HF Video column's rows
    (rows.Rows), shards' items (shards.Payloads); items numbered in `gifs` are GIFs, read with PIL as .gif files are."""

    def __init__(self, items, labels, classes, size, min_frames: int, skip_bad: bool, decoder: str = "auto",
                 gifs=()):
        self.items, self.gifs = items, set(gifs)
        super().__init__(list(range(len(items))), labels, classes, size, min_frames, skip_bad, decoder)

    def _source(self, j: int):
        return self.items.source(self.files[j])

    def _name(self, j: int) -> str:
        return self.items.name(self.files[j])

    def _is_gif(self, j: int) -> bool:
        return self.files[j] in self.gifs


# ---- arrays -------------------------------------------------------------------------------------------------

def clip_array(a: np.ndarray, where: str, name: str | None = "video") -> np.ndarray:
    """uint8 [n t h w] (grayscale) or [n t h w c] (channels last, c 1 or 3) -> uint8 [n t c h w]. `where` and the
    array's `name` (None: `where` is the array) name it in errors."""
    what = f"{where}: {name!r}" if name else where
    if a.dtype != np.uint8:
        raise UserError(f"{what} holds {a.dtype}, not uint8; clips are uint8 0..255: convert them, e.g. "
                        f"(x * 255).round().astype(np.uint8)")
    if a.ndim == 4:
        return a[:, :, None]
    if a.ndim == 5 and a.shape[-1] in (1, 3):
        return a.transpose(0, 1, 4, 2, 3)
    raise UserError(f"{what} has shape {list(a.shape)}; clips are uint8 [N, T, H, W] (grayscale) or [N, T, H, W, C] "
                    f"with C 1 or 3 (channels last)")


def checked(video: np.ndarray, labels, classes, min_frames: int, where: str, name: str | None):
    """(clips uint8 [n t c h w], label ids, classes) of an array of clips, or a UserError naming `where`."""
    video = clip_array(video, where, name)  # [n t c h w]
    if video.shape[1] < min_frames:
        raise UserError(f"{where}: clips of {video.shape[1]} frames, fewer than the {min_frames} a clip needs; lower "
                        f"domain.frames or domain.stride")
    ids, classes = encode_labels(labels, len(video), classes, where, "clip")
    return video, ids, classes


def array_split(video: np.ndarray, labels, classes, size, min_frames: int, where: str, name: str | None) -> ArrayClips:
    video, ids, classes = checked(video, labels, classes, min_frames, where, name)
    return ArrayClips(np.ascontiguousarray(video), ids, classes, size or min(video.shape[-2:]))


def mapped_split(file: Path, labels, classes, size, min_frames: int, where: str, name: str) -> MappedClips:
    video, ids, classes = checked(open_npy(file), labels, classes, min_frames, where, name)
    return MappedClips(file, video, where, name, ids, classes, size or min(video.shape[-2:]))


def array_files(path: Path, cache_dir) -> tuple[list[str], dict[str, Path]]:
    """(every array name, {name: .npy file} for the ARRAYS present): a .npy is `video` itself; a .npz's arrays are
    converted once into .npy files in the cache."""
    if not is_npz(path):
        return ["video"], {"video": path}
    names = npz_names(path)
    return names, npz_to_npy(path, [k for k in ARRAYS if k in names], cache_dir)


def arrays(path: Path, size: int | None, min_frames: int, cache_dir=None) -> dict:
    """A .npy of clips, or a .npz with `video` (and `label`, `test_video`, `test_label`): the clips memory-mapped (a
    .npz through .npy copies in cache_dir), the labels read."""
    if path.suffix.lower() not in (".npz", ".npy"):
        raise UserError(f"data.path {path} is not a video source; point it at {WHAT}")
    try:
        names, files = array_files(path, cache_dir)
        labels = {k: np.load(files[k], allow_pickle=False) for k in ("label", "test_label") if k in files}
        for k in ("video", "test_video"):  # mapped here to fail here
            if k in files:
                open_npy(files[k])
    except Exception as e:  # a broken zip or header, pickled object arrays too: loading them would run code
        raise UserError(f"cannot read {path}: {reason(e)}; save numeric or string arrays with np.save or np.savez") \
            from None
    if "video" not in names:
        raise UserError(f"{path} has no array 'video' (arrays: {', '.join(names) or 'none'}); save the clips as "
                        f"video=[N, T, H, W(, C)] uint8")
    ignored = [k for k in names if k not in ARRAYS]
    if ignored:
        print(f"multissl: data: {path}: ignored arrays {', '.join(ignored)} (reads {', '.join(ARRAYS)})",
              file=sys.stderr)
    out = {"train": mapped_split(files["video"], labels.get("label"), None, size, min_frames, str(path), "video")}
    if "test_video" in files:
        train = out["train"]
        out["test"] = mapped_split(files["test_video"], labels.get("test_label"), train.classes, train.shape[-1],
                                   min_frames, str(path), "test_video")
    return out


# ---- folders and HF datasets ---------------------------------------------------------------------------------

def folder(root: Path, size: int | None, min_frames: int, skip_bad: bool, decoder: str) -> dict:
    out, classes = {}, None
    for split, d in split_folders(root).items():
        files = scan(d, VIDEO_EXT)
        if not files:
            raise UserError(f"no videos ({', '.join(sorted(VIDEO_EXT))}) under {d}; put video files (optionally in "
                            f"class subfolders) there")
        labels, classes = labelled(files, d, classes)
        out[split] = FileClips(files, labels, list(classes) or None, size, min_frames, skip_bad, decoder)
        size = out[split].size  # the test split is read at the training size
    return out


def hf_video_column(feats, where: str) -> str:
    """The column holding clips: a Video feature, or arrays (Array3D/4D, nested lists) [t h w] / [t h w c]."""
    import datasets

    def rank(f):  # nesting depth of a list feature; an Array3D/4D's rank
        return len(f.shape) if hasattr(f, "shape") else 1 + rank(f.feature) if hasattr(f, "feature") else 0
    ok = [k for k, f in feats.items() if isinstance(f, datasets.Video) or rank(f) in (3, 4)]
    if not ok:
        raise UserError(f"HF dataset {where} has no video column (columns: {', '.join(feats)}); save clips as a "
                        f"datasets.Video column or uint8 arrays [T, H, W(, C)] (Array4D)")
    return "video" if "video" in ok else ok[0]


def hf_clips(ds, column: str, where: str) -> np.ndarray:
    """An array column -> uint8 [n t h w (c)], one shape for every clip."""
    f = ds.features[column]
    while hasattr(f, "feature"):
        f = f.feature
    if f.dtype != "uint8":
        raise UserError(f"HF dataset {where}: column {column!r} holds {f.dtype}, not uint8; cast it, e.g. "
                        f"ds.cast_column({column!r}, datasets.Array4D(shape, 'uint8'))")
    return stack_clips(list(ds.with_format("numpy", dtype=np.uint8)[column]), f"HF dataset {where}", "row")


def stack_clips(clips: list, where: str, item: str) -> np.ndarray:
    """Clips [t h w (c)] of one shape -> [n t h w (c)]; `item` names one of them in the error."""
    odd = next((j for j, c in enumerate(clips) if c.shape != clips[0].shape), None)
    if odd is not None:
        raise UserError(f"{where}: clips of different shapes ({list(clips[0].shape)} in {item} 0, "
                        f"{list(clips[odd].shape)} in {item} {odd}); give them one [T, H, W(, C)], or save them as "
                        f"video files")
    return np.stack(clips)


MEMORY = ("uint8 clips [n, t, h, w, c] (c 1 or 3) or [n, t, h, w], or a list or Dataset of clips [t, h, w(, c)] of one "
          "shape, as (clips, labels) for labels")


def memory_clips(obj, size: int | None, min_frames: int) -> dict:
    """In-memory clips (MEMORY) -> {"train": ArrayClips}: unsplit, as a folder without train/ or a .npz without
    test_video."""
    clips, labels = unpack(obj)
    if is_array(clips):
        video = numpy(clips)
    elif isinstance(clips, (list, torch.utils.data.Dataset)) and len(clips):
        video = stack_clips([numpy(clips[i]) for i in range(len(clips))], "data.path", "clip")
    else:
        raise UserError(f"data.path holds {describe(clips)}; the video domain reads {MEMORY}")
    return {"train": array_split(video, labels, None, size, min_frames, "data.path", None)}


def hf(where: str, saved: bool, size: int | None, min_frames: int, skip_bad: bool, decoder: str) -> dict:
    import datasets
    splits = hf_splits(where, saved)
    feats = splits["train"].features
    column = hf_video_column(feats, where)
    label = next((k for k, f in feats.items() if isinstance(f, datasets.ClassLabel)),
                 "label" if "label" in feats else None)
    classes = getattr(feats.get(label), "names", None)  # a ClassLabel's
    out = {}
    for split, ds in splits.items():
        labels = list(ds[label]) if label else None
        if isinstance(feats[column], datasets.Video):
            ids, classes = encode_labels(labels, len(ds), classes, f"HF dataset {where}", "clip")
            rows = Rows(ds, column, datasets.Video(decode=False), where)
            out[split] = ItemClips(rows, ids, classes, size, min_frames, skip_bad, decoder)
        else:
            out[split] = array_split(hf_clips(ds, column, where), labels, classes, size, min_frames,
                                     f"HF dataset {where}", column)
        size, classes = out[split].shape[-1], out[split].classes
    return out


def load(data: dict, size: int | None, min_frames: int, decoder: str = "auto", cache_dir=None) -> dict[str, Clips]:
    """{"train": Clips, "test": Clips (when the source has a test split)} from data["path"]; frames come out
    [c size size] (size None: the shorter side of the first training clip). A .npz's arrays are converted into
    cache_dir (None: the default cache). Says how many bad files were skipped."""
    path = data.get("path")
    if in_memory(path):
        return memory_clips(path, size, min_frames)
    if not path:
        raise UserError(f"data.path is not set; point it at {WHAT}")
    kind, where = locate(str(path), WHAT, folders=True, files=True)
    skip_bad = bool(data.get("skip_bad", False))
    if kind == "folder":
        out = folder(where, size, min_frames, skip_bad, decoder)
    elif kind == "file":
        out = arrays(where, size, min_frames, cache_dir)
    elif kind == "shards":
        from .shards import shards  # its readers are this module's Clips
        out = shards(where, size, min_frames, skip_bad, decoder)
    else:
        out = hf(str(where), kind == "saved", size, min_frames, skip_bad, decoder)
    skipped = sum(c.skipped for c in out.values())
    if skipped:
        print(f"multissl: data: skipped {skipped} unreadable or too short videos", file=sys.stderr)
    return out
