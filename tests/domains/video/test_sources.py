"""Video sources: folders of real encoded files (frame counts, labels, exact frames, seeking), GIFs, .npz/.npy
arrays, HF datasets, and every bad input's one-line error or counted skip. Frame k of every test video shows its
index: the top half is gray 8 * (k % 32), the bottom half 8 * (k // 32), so a decoded frame reads back as its index."""
import sys

import numpy as np
import pytest
import torch

from multissl.domains.video.decode import av_read
from multissl.domains.video.sources import ArrayClips, FileClips, load
from multissl.errors import UserError

av = pytest.importorskip("av")

from videofiles import indices, pattern, write  # noqa: E402  (tests/videofiles.py)


def empty_video(path):
    """A valid container with a video stream and no frame muxed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c = av.open(str(path), "w")
    s = c.add_stream("mpeg4", rate=24)
    s.width, s.height = 48, 32
    c.start_encoding()
    c.close()
    return path


@pytest.fixture
def folder(tmp_path):
    """train/a (24 and 30 frames), train/b (24), test/a (24); 32 x 48."""
    root = tmp_path / "videos"
    write(root / "train" / "a" / "0.mp4", 24)
    write(root / "train" / "a" / "1.mp4", 30)
    write(root / "train" / "b" / "2.mp4", 24)
    write(root / "test" / "a" / "3.mp4", 24)
    return root


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ---- folders of video files ---------------------------------------------------------------------------------

def test_folder_frames_fps_labels_and_classes(folder):
    s = load({"path": str(folder)}, None, 8)
    tr, te = s["train"], s["test"]
    assert isinstance(tr, FileClips) and len(tr) == 3 and len(te) == 1
    assert [tr.frames(i) for i in range(3)] == [24, 30, 24] and tr.fps(0) == 24.0
    assert tr.classes == ["a", "b"] and tr.labels == [0, 0, 1] and te.labels == [0]
    assert tr[2] == {"x": 2, "y": 1}
    assert tr.skipped == 0 and tr.shape == te.shape == (3, 32, 32)  # size None: the shorter side, centre-cropped


def test_read_returns_exactly_the_frames_asked_in_order_with_repeats(folder):
    tr = load({"path": str(folder)}, None, 8)["train"]
    x = tr.read(0, [0, 5, 23])
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 32, 32)
    assert indices(x) == [0, 5, 23]
    assert indices(tr.read(1, [29, 3, 17, 3])) == [29, 3, 17, 3]
    assert torch.equal(tr.read(1, [29, 3, 17, 3]), tr.read(1, [29, 3, 17, 3]))  # deterministic
    with pytest.raises(IndexError):
        tr.read(0, [24])


def test_size_resizes_every_split_to_a_square(folder):
    s = load({"path": str(folder)}, 16, 8)
    x = s["train"].read(2, [1, 22])
    assert x.shape == (2, 3, 16, 16) and indices(x) == [1, 22]
    assert s["test"].read(0, [4]).shape == (1, 3, 16, 16)


def test_read_seeks_to_a_keyframe_instead_of_decoding_from_the_start(tmp_path):
    write(tmp_path / "long.mp4", 300, 32, 32, gop=12)
    tr = load({"path": str(tmp_path)}, None, 8)["train"]
    assert tr.frames(0) == 300
    assert indices(tr.read(0, [299, 290, 295])) == [299, 290, 295]
    assert tr.decoded <= 12 + 10  # at most a GOP before frame 290, then 290..299
    frames, count = av_read(str(tmp_path / "long.mp4"), [290, 299], seek=False)
    assert count == 300 and indices(torch.stack(frames)) == [290, 299]  # the same frames from the start


@pytest.mark.parametrize("name,codec", [("v.mkv", "mpeg4"), ("v.webm", "libvpx"), ("v.avi", "mpeg4"), ("v.mov", "mpeg4"),
                                        ("h264.mp4", "libx264")])  # H.264 reorders frames (B-frames)
def test_other_containers_including_ones_without_a_frame_count(tmp_path, name, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV wheel has no {codec} encoder")
    write(tmp_path / name, 40, codec=codec)
    with av.open(str(tmp_path / name)) as c:
        counted = c.streams.video[0].frames  # Matroska / WebM headers hold none: the duration gives it
    tr = load({"path": str(tmp_path)}, None, 8)["train"]
    assert counted == (0 if name.endswith(("mkv", "webm")) else 40)
    assert tr.frames(0) == 40 and indices(tr.read(0, [39, 20])) == [39, 20]


def test_animated_gif(tmp_path):
    from PIL import Image
    images = [Image.fromarray(pattern(k, 16, 16)) for k in range(10)]
    images[0].save(tmp_path / "a.gif", save_all=True, append_images=images[1:], duration=100, loop=0)
    tr = load({"path": str(tmp_path)}, None, 4)["train"]
    assert tr.frames(0) == 10 and tr.fps(0) == 10.0 and tr.labels == [-1] and tr.classes is None
    assert indices(tr.read(0, [9, 0, 4, 4])) == [9, 0, 4, 4]


def test_clips_pickle_for_loader_workers(folder):
    import pickle
    tr = load({"path": str(folder)}, None, 8)["train"]
    tr.read(0, [1])
    assert torch.equal(pickle.loads(pickle.dumps(tr)).read(1, [7, 2]), tr.read(1, [7, 2]))


def test_folder_without_videos_names_it_and_the_extensions(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "notes.txt").write_text("no video")
    with pytest.raises(UserError, match="no videos") as e:
        load({"path": str(tmp_path)}, None, 8)
    assert str(tmp_path / "train") in one_line(e) and ".mp4" in str(e.value)


# ---- bad files ----------------------------------------------------------------------------------------------

def corrupt(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).bytes(3000))


def empty_file(path):
    path.write_bytes(b"")


def short(path):
    write(path, 5)


@pytest.mark.parametrize("make,expect", [
    (corrupt, "cannot read video"),
    (empty_file, "cannot read video"),
    (empty_video, "has no frames"),
    (short, "has 5 frames, fewer than the 8"),
])
def test_each_bad_file_is_a_one_line_error_naming_it(tmp_path, make, expect):
    write(tmp_path / "good.mp4", 24)
    bad = tmp_path / "bad.mp4"
    make(bad)
    with pytest.raises(UserError, match=expect) as e:
        load({"path": str(tmp_path)}, None, 8)
    assert str(bad) in one_line(e) and "skip_bad" in str(e.value)


def test_too_short_suggests_fewer_frames_or_a_smaller_stride(tmp_path):
    write(tmp_path / "short.mp4", 5)
    with pytest.raises(UserError) as e:
        load({"path": str(tmp_path)}, None, 8)
    assert "domain.frames" in one_line(e) and "domain.stride" in str(e.value)


def test_skip_bad_leaves_bad_files_out_and_counts_them(tmp_path, capsys):
    write(tmp_path / "a" / "0.mp4", 24)
    corrupt(tmp_path / "a" / "1.mp4")
    empty_video(tmp_path / "b" / "2.mp4")
    write(tmp_path / "b" / "3.mp4", 5)
    write(tmp_path / "b" / "4.mp4", 20)
    tr = load({"path": str(tmp_path), "skip_bad": True}, None, 8)["train"]
    assert len(tr) == 2 and tr.skipped == 3 and tr.labels == [0, 1] and tr.classes == ["a", "b"]
    assert [tr.frames(i) for i in range(2)] == [24, 20] and indices(tr.read(1, [19])) == [19]
    assert "multissl: data: skipped 3 unreadable or too short videos" in capsys.readouterr().err


def test_skip_bad_with_every_file_bad_is_an_error(tmp_path):
    corrupt(tmp_path / "1.mp4")
    write(tmp_path / "2.mp4", 3)
    with pytest.raises(UserError, match="none of the 2 videos"):
        load({"path": str(tmp_path), "skip_bad": True}, None, 8)


def test_a_truncated_file_fails_in_read_naming_it(tmp_path):
    data = write(tmp_path / "v.mkv", 90).read_bytes()
    (tmp_path / "v.mkv").write_bytes(data[: len(data) // 3])  # the header still says 90 frames
    tr = load({"path": str(tmp_path)}, None, 8)["train"]
    with pytest.raises(UserError, match="cannot decode video") as e:
        tr.read(0, [0, tr.frames(0) - 1])
    assert str(tmp_path / "v.mkv") in one_line(e)


def test_missing_decoder_names_the_extra_and_gifs_still_load(tmp_path, monkeypatch):
    from PIL import Image
    write(tmp_path / "v" / "a.mp4", 24)
    (tmp_path / "g").mkdir()
    Image.fromarray(pattern(3, 8, 8)).save(tmp_path / "g" / "a.gif")
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    with pytest.raises(UserError) as e:
        load({"path": str(tmp_path / "v"), "skip_bad": True}, None, 8)
    assert "pip install 'multissl[video]'" in one_line(e) and "PyAV" in str(e.value)
    assert str(tmp_path / "v" / "a.mp4") in str(e.value)
    assert load({"path": str(tmp_path / "g")}, None, 1)["train"].frames(0) == 1


# ---- arrays -------------------------------------------------------------------------------------------------

def clips(n=4, t=6, h=8, w=8, c=None, seed=0):
    shape = (n, t, h, w) + ((c,) if c else ())
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_npz_grayscale_string_labels_test_split_and_ignored_arrays(tmp_path, capsys):
    v, tv = clips(), clips(2, seed=1)
    np.savez(tmp_path / "d.npz", video=v, label=np.array(["dog", "cat", "dog", "cat"]), test_video=tv,
             test_label=np.array(["cat", "owl"]), extra=np.zeros(3))
    s = load({"path": str(tmp_path / "d.npz")}, None, 4)
    tr, te = s["train"], s["test"]
    assert tr.classes == ["cat", "dog"] and tr.labels == [1, 0, 1, 0] and te.labels == [0, -1]
    assert tr.frames(0) == 6 and tr.fps(0) is None and tr.shape == (1, 8, 8)
    assert torch.equal(tr.read(2, [5, 0, 5]), torch.from_numpy(v[2, [5, 0, 5], None]))  # [3 1 8 8]
    assert torch.equal(te.read(1, [2]), torch.from_numpy(tv[1, [2], None]))
    err = capsys.readouterr().err
    assert f"multissl: data: {tmp_path / 'd.npz'}: ignored arrays extra" in err


def test_npz_channels_last_and_integer_labels(tmp_path):
    from multissl.domains.image import resize_uint8
    v = clips(c=3)
    np.savez(tmp_path / "d.npz", video=v, label=np.array([0, 2, 1, 2]))
    tr = load({"path": str(tmp_path / "d.npz")}, None, 4)["train"]
    assert tr.classes == ["0", "1", "2"] and tr.labels == [0, 2, 1, 2] and tr.shape == (3, 8, 8)
    stored = torch.from_numpy(v[1, [3, 0]]).permute(0, 3, 1, 2)  # [2 3 8 8]
    assert torch.equal(tr.read(1, [3, 0]), stored)
    small = load({"path": str(tmp_path / "d.npz")}, 4, 4)["train"]
    assert torch.equal(small.read(1, [3, 0]), resize_uint8(stored, 4))  # [2 3 4 4]


def test_npy_holds_just_the_video(tmp_path):
    v = clips(h=6, w=10)
    np.save(tmp_path / "v.npy", v)
    s = load({"path": str(tmp_path / "v.npy")}, None, 2)
    assert list(s) == ["train"] and s["train"].labels == [-1] * 4 and s["train"].classes is None
    assert s["train"].read(0, [1]).shape == (1, 1, 6, 6)  # the shorter side, centre-cropped
    assert torch.equal(s["train"].read(0, [1])[0, 0], torch.from_numpy(v[0, 1, :, 2:8]))


@pytest.mark.parametrize("arrays,expect", [
    ({"video": clips().astype(np.float32)}, "float32, not uint8"),
    ({"video": clips()[0]}, r"shape \[6, 8, 8\]"),
    ({"video": clips(c=2)}, "C 1 or 3"),
    ({"clips": clips(), "y": np.zeros(4)}, "no array 'video' .arrays: clips, y"),
    ({"video": clips(), "label": np.zeros(3, int)}, "labels of shape \\[3\\] for 4 clips"),
    ({"video": clips(t=3)}, "clips of 3 frames, fewer than the 4"),
])
def test_bad_arrays_are_one_line_errors_naming_the_file(tmp_path, arrays, expect):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError, match=expect) as e:
        load({"path": str(tmp_path / "d.npz")}, None, 4)
    assert str(tmp_path / "d.npz") in one_line(e)


def test_array_clips_resize_and_unlabelled():
    a = ArrayClips(clips(2, 3, 8, 12)[:, :, None])  # [2 3 1 8 12]
    assert a.labels == [-1, -1] and a.frames(1) == 3 and a.shape == (1, 8, 12)
    assert a.read(1, [2, 2]).shape == (2, 1, 8, 12)
    assert ArrayClips(clips(2, 3, 8, 12)[:, :, None], [0, 1], ["x", "y"], 4).read(0, [0]).shape == (1, 1, 4, 4)


# ---- HF datasets --------------------------------------------------------------------------------------------

def test_hf_array_column_with_class_labels(tmp_path):
    import datasets
    v = clips(4, 5, 8, 8, 3)
    feats = datasets.Features({"clip": datasets.Array4D((5, 8, 8, 3), "uint8"),
                               "label": datasets.ClassLabel(names=["x", "y"])})
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"clip": list(v), "label": [1, 0, 1, 1]}, feats),
                               "test": datasets.Dataset.from_dict({"clip": list(v[:1]), "label": [0]}, feats)})
    dd.save_to_disk(tmp_path / "hf")
    s = load({"path": str(tmp_path / "hf")}, None, 5)
    assert s["train"].classes == ["x", "y"] and s["train"].labels == [1, 0, 1, 1] and s["test"].labels == [0]
    assert torch.equal(s["train"].read(3, [4, 1]), torch.from_numpy(v[3, [4, 1]]).permute(0, 3, 1, 2))


def test_hf_clips_of_different_shapes_are_an_error(tmp_path):
    import datasets
    datasets.Dataset.from_dict({"video": [clips(1, 4)[0], clips(1, 5)[0]]}).save_to_disk(tmp_path / "hf")
    with pytest.raises(UserError, match=r"different shapes \(\[4, 8, 8\] in row 0, \[5, 8, 8\] in row 1\)") as e:
        load({"path": str(tmp_path / "hf")}, None, 2)
    assert str(tmp_path / "hf") in one_line(e)


def test_hf_video_column_is_decoded_like_files(folder, tmp_path):
    import datasets
    files = [str(folder / "train" / "a" / "1.mp4"), str(folder / "train" / "b" / "2.mp4")]
    feats = datasets.Features({"video": datasets.Video(), "label": datasets.ClassLabel(names=["a", "b"])})
    datasets.Dataset.from_dict({"video": files, "label": [0, 1]}, feats).save_to_disk(tmp_path / "hf")
    tr = load({"path": str(tmp_path / "hf")}, 16, 8)["train"]
    assert tr.classes == ["a", "b"] and tr.labels == [0, 1] and [tr.frames(i) for i in range(2)] == [30, 24]
    assert indices(tr.read(0, [28, 2])) == [28, 2] and tr.read(1, [0]).shape == (1, 3, 16, 16)
