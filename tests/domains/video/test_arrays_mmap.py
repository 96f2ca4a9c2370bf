"""Video arrays memory-mapped: a .npy maps as it is, a .npz through .npy copies in the cache (reused until the file
changes); samples equal those of the whole array in memory bit for bit; a pickled dataset holds a path, not clips;
the raw-pixel baselines score a bounded subset, made float a block at a time."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from multissl.domains import arrays
from multissl.domains.video import VideoDomain, evaluation
from multissl.domains.video.sources import load
from multissl.errors import UserError


def clips(n=6, t=6, h=8, w=8, c=None, seed=0) -> np.ndarray:
    shape = (n, t, h, w) + ((c,) if c else ())
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save(path, how: str, **a):
    {"npy": lambda: np.save(path, a["video"]), "npz": lambda: np.savez(path, **a),
     "compressed": lambda: np.savez_compressed(path, **a)}[how]()
    return str(path)


def same_domains(a: VideoDomain, b: VideoDomain):
    """The same state, and bit for bit the same evaluation input and views for every clip."""
    ta, tb = a.dataset("train"), b.dataset("train")
    assert a.state() == b.state() and len(ta) == len(tb)
    for i in range(len(ta)):
        assert ta[i]["y"] == tb[i]["y"]
        assert torch.equal(a.eval_input(ta[i]["x"]), b.eval_input(tb[i]["x"]))
        ga, gb = torch.Generator().manual_seed(i), torch.Generator().manual_seed(i)
        for va, vb in zip(a.views(ta[i]["x"], ga, 2, 1), b.views(tb[i]["x"], gb, 2, 1)):
            assert torch.equal(va, vb)


@pytest.mark.parametrize("how", ["npy", "npz", "compressed"])
@pytest.mark.parametrize("c, size", [(None, None), (3, 6)])
def test_mapped_files_give_the_samples_of_the_whole_array(tmp_path, how, c, size):
    v, y = clips(c=c), np.array([0, 1, 2, 0, 1, 2])
    path = save(tmp_path / f"v.{'npy' if how == 'npy' else 'npz'}", how, video=v, label=y)
    whole = v if how == "npy" else (v, y)  # in memory: what reading the file whole gave
    kw = {"frames": 4, "size": size, "flip": 1.0, "jitter_p": 1.0}
    mapped = VideoDomain(data={"path": path}, cache_dir=str(tmp_path / "c"), **kw)
    same_domains(mapped, VideoDomain(data={"path": whole}, **kw))
    assert isinstance(mapped._clips["train"].video, np.memmap)


@pytest.mark.parametrize("how", ["npz", "compressed"])
def test_both_splits_of_a_npz_read_as_stored_from_a_copy_in_the_cache(tmp_path, how):
    v, tv = clips(c=3), clips(2, c=3, seed=1)
    path = save(tmp_path / "v.npz", how, video=v, test_video=tv, label=np.arange(6) % 2)
    s = load({"path": path}, None, 4, cache_dir=tmp_path / "c")
    for split, stored in (("train", v), ("test", tv)):
        mapped = s[split].video
        assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
        assert Path(mapped.filename).is_relative_to(tmp_path / "c" / "arrays")
        for i in range(len(stored)):
            assert torch.equal(s[split].read(i, [5, 0, 5]), torch.from_numpy(stored[i, [5, 0, 5]]).permute(0, 3, 1, 2))


def test_a_npy_maps_the_file_itself(tmp_path):
    path = save(tmp_path / "v.npy", "npy", video=clips())
    mapped = load({"path": path}, None, 4, cache_dir=tmp_path / "c")["train"].video
    assert isinstance(mapped, np.memmap) and Path(mapped.filename) == Path(path)
    assert not (tmp_path / "c").exists()


def test_the_copy_is_reused_and_made_again_when_the_file_changes(tmp_path, monkeypatch):
    copies = []
    copy = arrays._copy
    monkeypatch.setattr(arrays, "_copy", lambda z, m, f: copies.append(m) or copy(z, m, f))
    path = tmp_path / "v.npz"
    np.savez_compressed(path, video=clips(), other=np.zeros(3))
    first = arrays.npz_to_npy(path, ["video"], tmp_path / "c")
    assert arrays.npz_to_npy(path, ["video"], tmp_path / "c") == first and copies == ["video.npy"]  # reused
    np.savez_compressed(path, video=clips(seed=1))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # later, even on a coarse clock
    again = arrays.open_npz(path, ["video"], tmp_path / "c")["video"]
    assert copies == ["video.npy", "video.npy"] and np.array_equal(again, clips(seed=1))
    assert not first["video"].parent.exists()  # the older version's copy is gone
    with pytest.raises(KeyError, match="no array 'label'"):
        arrays.npz_to_npy(path, ["label"], tmp_path / "c")


def test_a_pickled_dataset_holds_the_path_and_maps_it_again(tmp_path):
    v = clips(40, 6, 16, 16, 3)
    d = VideoDomain(frames=4, data={"path": save(tmp_path / "v.npz", "npz", video=v)}, cache_dir=str(tmp_path / "c"))
    ds = d.dataset("train")
    assert len(pickle.dumps(ds)) < v.nbytes // 20 and len(pickle.dumps(d)) < v.nbytes // 20
    again = pickle.loads(pickle.dumps(ds)).clips
    assert again._video is None  # mapped on the first read, in the process that reads
    assert torch.equal(again.read(3, [1, 4]), ds.clips.read(3, [1, 4])) and isinstance(again.video, np.memmap)


def test_an_object_array_in_a_npz_is_refused_naming_the_file(tmp_path):
    np.savez(tmp_path / "v.npz", video=np.array([[1], [2, 3]], dtype=object))  # pickled: loading it would run code
    with pytest.raises(UserError, match="cannot read .*v.npz.*np.save or np.savez") as e:
        load({"path": str(tmp_path / "v.npz")}, None, 4, cache_dir=tmp_path / "c")
    assert "\n" not in str(e.value)


# ---- the raw-pixel baselines ------------------------------------------------------------------------------------

class Items(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"x": i, "y": i % 3}


@pytest.mark.parametrize("limit, scored", [(None, 7), (1000, 7), (5, 5)])
def test_the_pixel_baselines_score_at_most_pixel_clips_evenly_spread(monkeypatch, limit, scored):
    monkeypatch.setattr(evaluation, "PIXEL_CLIPS", 7)
    seen = []

    def pixels(ds):
        seen.append([ds[i]["x"] for i in range(len(ds))])
        x = torch.rand(len(ds), 4)
        return x, x

    cache = {}
    out = evaluation.knn_metrics(Items(40), Items(30), {}, None, limit, pixels, cache)
    assert [len(s) for s in seen] == [scored, scored] and seen[0][0] == 0 and seen[0][-1] == 39
    assert set(out) == {"pixel_knn_acc", "frame_knn_acc"} and list(cache) == [scored]


def test_raw_pixels_are_made_float_a_block_at_a_time_with_the_same_features(monkeypatch):
    v = torch.from_numpy(clips(7, 3, 36, 36, seed=2))[:, :, None]  # [7 3 1 36 36]: shrunk to 32 x 32
    whole = F.interpolate(v.float().flatten(0, 1) / 255, size=(32, 32), mode="area").view(7, 3, 1, 32, 32)
    frames = []
    interpolate = F.interpolate
    monkeypatch.setattr(F, "interpolate", lambda x, **kw: frames.append(len(x)) or interpolate(x, **kw))
    clip, first = evaluation.raw_pixels(Items(7), lambda i: v[i], 36, block=3)
    assert frames == [9, 9, 3]  # blocks of 3 clips of 3 frames
    assert torch.equal(clip, whole.flatten(1)) and torch.equal(first, whole[:, 0].flatten(1))
