"""In-memory data in data.path (what multissl.fit(data=...) passes): per domain, the splits and labels, samples equal to
those of the same data written to a file in the domain's format, the other accepted forms, and one bad object's
one-line error."""
import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from multissl.domains.image import ImageDomain
from multissl.domains.memory import class_values, given, in_memory, unpack
from multissl.domains.tabular import TabularDomain
from multissl.errors import UserError


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def same_samples(a, b, n: int, atol: float = 1e-6, **differ):
    """Two domains built on the same data: the same states (export; but for the keys in `differ`, said to hold those
    values) and the same model input for the first n samples."""
    ta, tb = a.dataset("train"), b.dataset("train")
    sa, sb = (json.loads(json.dumps(d.state())) for d in (a, b))  # as export writes them
    for k, (va, vb) in differ.items():
        assert (sa.pop(k), sb.pop(k)) == (va, vb)
    same_state(sa, sb)
    for i in range(n):
        xa, xb = (d.eval_input(t[i]["x"]) for d, t in ((a, ta), (b, tb)))
        torch.testing.assert_close(xa, xb, atol=atol, rtol=0, equal_nan=True)


def same_state(a, b):
    """Equal states, floats up to rounding (statistics summed in another order)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same_state(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            same_state(u, v)
    else:
        assert a == (pytest.approx(b, abs=1e-6) if isinstance(a, float) else b)


class Pairs(torch.utils.data.Dataset):
    """A map-style Dataset of (x, y) items, as torchvision's are."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


# ---- shared ----------------------------------------------------------------------------------------------------

def test_objects_are_told_from_paths_and_labels_from_items():
    assert in_memory(np.zeros(3)) and in_memory([]) and not in_memory("a.csv") and not in_memory(None)
    assert given(np.zeros((2, 2))) and not given("") and not given(None)  # no ambiguous truth value of an array
    x, y = np.zeros((3, 2)), [0, 1, 0]
    assert unpack((x, y)) == (x, y) and unpack(x) == (x, None)
    samples, labels = unpack([{"x": "a", "y": 1}, {"x": "b"}])
    assert [samples[0], samples[1]] == ["a", "b"] and labels == [1, None]
    pairs = Pairs(["a", "b"], [3, 4])
    pairs.targets = [5, 6]  # torchvision's labels, read without reading the items
    assert unpack(pairs)[1] == [5, 6] and unpack(Pairs(["a", "b"], [3, 4]))[1] == [3, 4]


def test_labels_are_ids_or_strings_one_per_sample():
    assert class_values(np.array([2, -1, 0]), 3) == [2, None, 0]
    assert class_values(["b", None, "a"], 3) == ["b", None, "a"]
    with pytest.raises(UserError, match=r"labels of shape \[2\] for 3 samples") as e:
        class_values([0, 1], 3)
    with pytest.raises(UserError, match="labels hold float") as e:
        class_values(np.array([0.5, 1.0]), 2)
    with pytest.raises(UserError, match="mix integer ids and strings") as e:
        class_values([0, "a"], 2)
    one_line(e)


# ---- images --------------------------------------------------------------------------------------------------

@pytest.fixture
def images():
    """12 RGB images 10 x 12 (not square: resized and cropped as files are), labels 0 then 1."""
    x = np.random.default_rng(0).integers(0, 256, (12, 10, 12, 3), dtype=np.uint8)
    return x, np.repeat([0, 1], 6)


def test_images_equal_the_same_images_read_from_files(tmp_path, images):
    from PIL import Image
    x, y = images
    for i, (a, c) in enumerate(zip(x, y)):  # sorted as the array: by class, then index
        (tmp_path / str(c)).mkdir(exist_ok=True)
        Image.fromarray(a).save(tmp_path / str(c) / f"{i:02d}.png")
    mem, files = ImageDomain(data={"path": (x, y)}), ImageDomain(data={"path": str(tmp_path)})
    tr, _ = mem.dataset("train"), files.dataset("train")
    assert len(tr) == 12 and mem.dataset("test") is None  # unsplit, as a folder without train/
    assert [tr[i]["y"] for i in range(12)] == y.tolist() and mem.num_classes == 2
    assert (mem.image_size, mem.channels) == (files.image_size, files.channels) == (10, 3)
    same_samples(mem, files, 12)
    again = pickle.loads(pickle.dumps(tr))  # loader workers under spawn
    assert torch.equal(again[3]["x"], tr[3]["x"])


def test_image_forms_give_the_same_samples(images):
    from PIL import Image
    x, y = images
    want = ImageDomain(data={"path": (x, y)}).dataset("train")
    forms = [(x.astype(np.float32) / 255, y),  # floats in [0, 1]
             (torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y)),  # a tensor, channels first
             ([Image.fromarray(a) for a in x], y.tolist()),  # PIL images
             Pairs(x, y),  # a Dataset of (x, y)
             [{"x": a, "y": int(c)} for a, c in zip(x, y)]]
    for form in forms:
        got = ImageDomain(data={"path": form}).dataset("train")
        assert all(torch.equal(got[i]["x"], want[i]["x"]) and got[i]["y"] == want[i]["y"] for i in range(12))
    gray = ImageDomain(data={"path": x[..., 0]})
    assert gray.dataset("train")[0]["x"].shape == (1, 10, 10) and gray.channels == 1 and gray.num_classes is None
    assert ImageDomain(image_size=8, channels=1, data={"path": x}).dataset("train")[0]["x"].shape == (1, 8, 8)


@pytest.mark.parametrize("bad, said", [(np.zeros((4, 8, 8), np.int64), "holds int64; the image domain reads uint8"),
                                       (np.full((4, 8, 8), 2.0), "floats from 2 to 2; the image domain reads floats"),
                                       (np.zeros((4, 8)), r"numpy array of float64 shaped \[4, 8\]; the image domain"),
                                       ({"x": 1}, "holds a dict; the image domain reads")])
def test_a_wrong_image_object_is_one_line(bad, said):
    with pytest.raises(UserError, match=said) as e:
        ImageDomain(data={"path": bad}).dataset("train")
    one_line(e)


# ---- audio ---------------------------------------------------------------------------------------------------

def audio_domain(path):
    from multissl.domains.audio import AudioDomain
    return AudioDomain(sample_rate=8000, clip_seconds=0.25, data={"path": path})


@pytest.fixture
def waves():
    """6 float32 clips of 0.25 s at 8 kHz: tones of two pitches with noise, labels 0 then 1."""
    t = np.arange(2000) / 8000
    rng = np.random.default_rng(0)
    w = np.stack([0.3 * np.sin(2 * np.pi * (300 + 500 * (i >= 3)) * t) + 0.01 * rng.normal(size=2000)
                  for i in range(6)]).astype(np.float32)
    return w, np.repeat([0, 1], 3)


def test_waveforms_equal_the_same_clips_read_from_files(tmp_path, waves):
    sf = pytest.importorskip("soundfile")
    w, y = waves
    for i, (a, c) in enumerate(zip(w, y)):
        (tmp_path / str(c)).mkdir(exist_ok=True)
        sf.write(tmp_path / str(c) / f"{i}.wav", a, 8000, subtype="FLOAT")
    mem, files = audio_domain((w, y)), audio_domain(str(tmp_path))
    tr = mem.dataset("train")
    assert len(tr) == 6 and mem.dataset("test") is None and mem.num_classes == 2
    assert [tr[i]["y"] for i in range(6)] == y.tolist()
    same_samples(mem, files, 6, atol=1e-5)


def test_waveform_forms_give_the_same_clips(waves):
    w, y = waves
    want = audio_domain(w).dataset("train")
    for form in ([torch.from_numpy(a) for a in w], (np.round(w * 32768).astype(np.int16), y), Pairs(w, y)):
        got = audio_domain(form).dataset("train")
        assert all(torch.allclose(got[i]["x"], want[i]["x"], atol=1e-4) for i in range(6))
    ragged = audio_domain([w[0], w[1, :1500]]).dataset("train")  # clips of any length, as files
    assert len(ragged[1]["x"]) == 1500


@pytest.mark.parametrize("bad, said", [(np.zeros((2, 100, 2), np.float32), r"shaped \[2, 100, 2\]; the audio domain"),
                                       ([np.zeros(10, np.float32)], "clip 0 of data.path is 1 ms long, shorter"),
                                       (["a.wav"], "clip 0 of data.path is a str; the audio domain reads")])
def test_a_wrong_audio_object_is_one_line(bad, said):
    with pytest.raises(UserError, match=said) as e:
        audio_domain(bad).dataset("train")
    one_line(e)


# ---- tables ---------------------------------------------------------------------------------------------------

@pytest.fixture
def table():
    r = np.random.default_rng(0)
    df = pd.DataFrame({"height": r.normal(170, 10, 40), "rooms": r.integers(1, 4, 40),
                       "color": r.choice(["red", "blue"], 40).astype(object), "member": r.random(40) < 0.5,
                       "label": r.choice(["no", "yes"], 40)})
    df.loc[::7, "height"] = np.nan
    df.loc[::5, "color"] = None
    return df


def test_a_dataframe_equals_the_same_table_read_from_a_csv(tmp_path, table):
    table.to_csv(tmp_path / "t.csv", index=False)
    mem = TabularDomain(data={"path": table, "target": "label"})
    files = TabularDomain(data={"path": str(tmp_path / "t.csv"), "target": "label"})
    tr, te = mem.dataset("train"), mem.dataset("test")
    assert (len(tr), len(te)) == (32, 8)  # domain.test_fraction, as for one file
    assert mem.task == "classification" and tr.y.tolist() == files.dataset("train").y.tolist()
    same_samples(mem, files, 32)


def test_an_array_with_labels_equals_a_csv_with_columns_c0_and_target(tmp_path):
    x = np.random.default_rng(1).normal(size=(30, 3))
    y = np.arange(30) % 3
    pd.DataFrame({"c0": x[:, 0], "c1": x[:, 1], "c2": x[:, 2], "target": y}).to_csv(tmp_path / "t.csv", index=False)
    mem, files = TabularDomain(data={"path": (x, y)}), TabularDomain(data={"path": str(tmp_path / "t.csv"),
                                                                           "target": "target"})
    same_samples(mem, files, 24)
    assert [f["name"] for f in mem.features] == ["c0", "c1", "c2"] and mem.num_classes == 3
    assert mem.dataset("train").y.tolist() == files.dataset("train").y.tolist()
    rows = TabularDomain(data={"path": Pairs(torch.from_numpy(x), y)})  # a Dataset of (row, label)
    torch.testing.assert_close(rows.dataset("train").x, mem.dataset("train").x)


@pytest.mark.parametrize("bad, said", [(np.zeros((4, 2, 2)), r"shaped \[4, 2, 2\]; the tabular domain reads"),
                                       (["a", "b"], "holds a list of 2 str; the tabular domain reads")])
def test_a_wrong_table_object_is_one_line(bad, said):
    with pytest.raises(UserError, match=said) as e:
        TabularDomain(data={"path": bad}).dataset("train")
    one_line(e)


def test_labels_beside_a_table_that_has_their_column_are_refused(table):
    with pytest.raises(UserError, match="has a column 'label' already; pass the table alone") as e:
        TabularDomain(data={"path": (table, [0] * 40), "target": "label"}).dataset("train")
    one_line(e)


# ---- text ---------------------------------------------------------------------------------------------------------

WORDS = ["the cat sat on the mat", "a dog ran in the park", "birds sing at dawn", "rain falls on the roof",
         "the sun is bright today", "we read a long book", "fish swim in the sea", "snow covers the hills, slowly"]


def text_domain(tmp_path, path, **data):
    from multissl.domains.text import TextDomain
    return TextDomain(vocab_size=200, cache_dir=str(tmp_path / "cache"), data={"path": path, **data})


def test_texts_equal_the_same_texts_read_from_a_table(tmp_path):
    pytest.importorskip("tokenizers")
    y = [0, 1] * 4
    pd.DataFrame({"text": WORDS, "label": y}).to_csv(tmp_path / "t.csv", index=False)
    mem, files = text_domain(tmp_path, (WORDS + ["  "], y + [1])), text_domain(tmp_path, str(tmp_path / "t.csv"),
                                                                               target="label")
    tr, te = mem.dataset("train"), mem.dataset("test")
    assert len(tr) + len(te) == 8 and tr.texts == files.dataset("train").texts  # the blank text left out
    assert tr.y == files.dataset("train").y
    same_samples(mem, files, len(tr), classes=([0, 1], ["0", "1"]))  # ids stay ids; a table's cells are strings
    for form in (WORDS, Pairs(WORDS, y), pd.DataFrame({"body": WORDS}), np.array(WORDS)):
        got = text_domain(tmp_path, form, text_column="body")
        assert sorted(got.dataset("train").texts + got.dataset("test").texts) == sorted(WORDS)


def test_a_wrong_text_object_is_one_line(tmp_path):
    pytest.importorskip("tokenizers")
    with pytest.raises(UserError, match="data.path holds int values, not text; the text domain reads a list of str") \
            as e:
        text_domain(tmp_path, [1, 2, 3]).dataset("train")
    one_line(e)


# ---- video ------------------------------------------------------------------------------------------------------

def video_domain(path):
    from multissl.domains.video import VideoDomain
    return VideoDomain(frames=4, data={"path": path})


def test_clips_equal_the_same_clips_read_from_a_npz(tmp_path):
    v = np.random.default_rng(0).integers(0, 256, (4, 6, 8, 8, 3), dtype=np.uint8)
    y = np.array([0, 1, 0, 1])
    np.savez(tmp_path / "v.npz", video=v, label=y)
    mem, files = video_domain((v, y)), video_domain(str(tmp_path / "v.npz"))
    tr = mem.dataset("train")
    assert len(tr) == 4 and mem.dataset("test") is None and mem.classes == ["0", "1"]
    assert [tr[i]["y"] for i in range(4)] == y.tolist()
    same_samples(mem, files, 4)
    for form in (v, list(torch.from_numpy(v)), Pairs(v, y)):
        same_samples(video_domain(form), mem, 4)


@pytest.mark.parametrize("bad, said", [(np.zeros((2, 6, 8, 8, 3), np.float32), "data.path holds float32, not uint8"),
                                       ([np.zeros((6, 8, 8), np.uint8), np.zeros((5, 8, 8), np.uint8)],
                                        r"clips of different shapes \(\[6, 8, 8\] in clip 0, \[5, 8, 8\] in clip 1\)"),
                                       ({"video": 1}, "holds a dict; the video domain reads uint8 clips")])
def test_a_wrong_video_object_is_one_line(bad, said):
    with pytest.raises(UserError, match=said) as e:
        video_domain(bad).dataset("train")
    one_line(e)


# ---- rl -------------------------------------------------------------------------------------------------------------

@pytest.fixture
def buffer():
    """40 steps of 5-d vector observations in four episodes of 10."""
    n = 40
    ends = np.zeros(n, bool)
    ends[9::10] = True
    return {"obs": np.random.default_rng(0).normal(size=(n, 5)).astype(np.float32), "action": np.arange(n) % 2,
            "reward": np.ones(n, np.float32), "terminated": ends, "truncated": np.zeros(n, bool)}


def test_a_dict_of_arrays_equals_the_same_buffer_read_from_a_npz(tmp_path, buffer):
    from multissl.domains.rl import RLDomain
    np.savez(tmp_path / "b.npz", **buffer)
    mem, files = RLDomain(data={"path": buffer}), RLDomain(data={"path": str(tmp_path / "b.npz")})
    assert (len(mem.dataset("train")), len(mem.dataset("test"))) == (30, 10)  # held-out episodes, as for a file
    same_samples(mem, files, 30)
    tensors = {k: torch.from_numpy(v) for k, v in buffer.items()} | {"env_config": {"env": "CartPole-v1"}}
    d = RLDomain(data={"path": tensors})  # tensors, and env_config as a dict
    d.dataset("train")
    assert d.env_config == {"env": "CartPole-v1"} and d.mean == mem.mean
    assert torch.equal(d.eval_input(d.dataset("train")[0]["x"]), mem.eval_input(mem.dataset("train")[0]["x"]))


@pytest.mark.parametrize("drop, bad, said", [("reward", None, "the replay buffer in data.path has no 'reward' array"),
                                             (None, [1, 2], "holds a list of 2 int; the rl domain reads a replay")])
def test_a_wrong_buffer_object_is_one_line(buffer, drop, bad, said):
    from multissl.domains.rl import RLDomain
    with pytest.raises(UserError, match=said) as e:
        RLDomain(data={"path": bad or {k: v for k, v in buffer.items() if k != drop}}).dataset("train")
    one_line(e)
