"""Shards of the audio and video domains (domains.shards): the items are the files (or clips) in the order and with
the labels training reads, each read back per item as its file is, so a run from shards is the run from the files;
shards of another domain are a one-line refusal."""
import io

import numpy as np
import pytest
import soundfile as sf
import torch

from multissl.domains.audio import AudioDomain
from multissl.domains.shards import Shards
from multissl.domains.video.sources import load
from multissl.errors import UserError
from multissl.shards import convert

av = pytest.importorskip("av")

from videofiles import pattern, write  # noqa: E402  (tests/videofiles.py)

RATE = 16000
FAST = ("trainer.max_steps=3", "data.batch_size=4", "objective=simclr")


def tone(freq: float, seconds: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


@pytest.fixture
def sounds(tmp_path):
    """train/{high,low} 3 clips each, a .flac among them; test/{high,low} 1 each."""
    root = tmp_path / "sounds"
    for split, n in (("train", 3), ("test", 1)):
        for cls, f in (("high", 2000.0), ("low", 300.0)):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                sf.write(root / split / cls / f"{i}.{'flac' if i == 2 else 'wav'}", tone(f * (1 + 0.1 * i), 0.3), RATE)
    return root


@pytest.fixture
def videos(tmp_path):
    """train/a (two mp4s, 10 and 12 frames), train/b (an mp4 and a GIF), test/a and test/b; 16 x 24."""
    from PIL import Image
    root = tmp_path / "videos"
    for name, n in (("train/a/0.mp4", 10), ("train/a/1.mp4", 12), ("train/b/2.mp4", 10), ("test/a/3.mp4", 10),
                    ("test/b/4.mp4", 11)):
        write(root / name, n, h=16, w=24)
    frames = [Image.fromarray(pattern(k, 16, 24)) for k in range(10)]
    frames[0].save(root / "train" / "b" / "5.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return root


def same_run(a: list[dict], b: list[dict]):
    """Two runs' metrics.jsonl: the same loss at every step, the same final figures (kNN, probe, ranks)."""
    losses = [m["loss"] for m in a if "loss" in m]
    assert len(losses) == 3 and losses == [m["loss"] for m in b if "loss" in m]
    assert "knn_acc" in a[-1] and a[-1] == b[-1]


def one_line(e) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


def test_audio_shards_hold_the_files_and_read_as_they_do(sounds, tmp_path):
    out = tmp_path / "shards"
    convert(str(sounds), str(out), ["domain=audio"])
    shards = Shards(out, "audio")
    files, read = AudioDomain(data={"path": str(sounds)}), AudioDomain(data={"path": str(out)})
    for split in ("train", "test"):
        listed = sorted((sounds / split).rglob("*.*"))
        assert [shards.items(split)[j] for j in range(len(listed))] == [f.read_bytes() for f in listed]
        a, b = files.dataset(split), read.dataset(split)
        assert b.labels == a.labels and len(b) == len(a)
        assert all(torch.equal(b[j]["x"], a[j]["x"]) for j in range(len(a)))
    assert shards.classes == ["high", "low"] and read.num_classes == files.num_classes == 2
    torch.testing.assert_close(read.mean, files.mean, rtol=0, atol=0)


def test_audio_run_from_shards_is_the_run_from_files(sounds, tmp_path, tiny):
    convert(str(sounds), str(tmp_path / "shards"), ["domain=audio"])
    a = tiny.metrics(tiny.run("domain=audio", f"data.path={sounds}", *FAST, name="files"))
    b = tiny.metrics(tiny.run("domain=audio", f"data.path={tmp_path / 'shards'}", *FAST, name="shards"))
    same_run(a, b)


def test_video_shards_of_files_and_arrays_read_as_their_sources(videos, tmp_path):
    convert(str(videos), str(tmp_path / "vs"), ["domain=video"])
    clips = np.random.default_rng(0).integers(0, 256, (5, 6, 8, 8, 3), dtype=np.uint8)  # channels last
    np.savez(tmp_path / "d.npz", video=clips, label=np.array(["dog", "cat", "dog", "owl", "cat"]),
             test_video=clips[:2, :, :4], test_label=np.array(["owl", "emu"]))
    convert(str(tmp_path / "d.npz"), str(tmp_path / "as"), ["domain=video"])
    for source, shards, form in ((videos, "vs", "files"), (tmp_path / "d.npz", "as", "arrays")):
        opened = Shards(tmp_path / shards, "video")
        a, b = load({"path": str(source)}, None, 4), load({"path": str(tmp_path / shards)}, None, 4)
        assert opened.form == form and b["train"].classes == a["train"].classes
        for split in ("train", "test"):
            assert b[split].labels == a[split].labels and b[split].shape == a[split].shape
            for i in range(len(a[split])):
                assert b[split].frames(i) == a[split].frames(i)
                assert torch.equal(b[split].read(i, [3, 0, 3]), a[split].read(i, [3, 0, 3]))
    files = Shards(tmp_path / "vs", "video")
    assert files.items("train")[3] == (videos / "train" / "b" / "5.gif").read_bytes()  # as stored, sorted: GIF 4th
    assert files.info == {"gif": {"train": [3], "test": []}}  # read with PIL, as a .gif file is
    item = np.load(io.BytesIO(Shards(tmp_path / "as", "video").items("train")[1]), allow_pickle=False)
    assert np.array_equal(item, clips[1].transpose(0, 3, 1, 2))  # one clip [t c h w]
    with pytest.raises(UserError) as e:
        AudioDomain(data={"path": str(tmp_path / "vs")}).dataset("train")
    assert "holds shards of the video domain" in one_line(e) and "domain=video" in one_line(e)


def test_video_run_from_shards_is_the_run_from_files(videos, tmp_path, tiny):
    convert(str(videos), str(tmp_path / "shards"), ["domain=video"])
    args = ("domain=video", "domain.frames=4", "domain.size=16", *FAST)
    a = tiny.metrics(tiny.run(*args, f"data.path={videos}", name="files"))
    b = tiny.metrics(tiny.run(*args, f"data.path={tmp_path / 'shards'}", name="shards"))
    same_run(a, b)
