"""HF image datasets stay memory-mapped and are decoded one row at a time: loading decodes nothing but the
statistics' sample, labels come from their column, loader workers get a reference to the Arrow files, and rows of
any mode read as the files do."""
import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import multissl.domains.image.domain as image_domain
import multissl.domains.image.sources as sources
from multissl.domains.image import ImageDomain
from multissl.errors import UserError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """12 noisy 64 x 48 images (a few kB each as PNG; a gray one first, an RGBA one), 3 classes; 4 test rows."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as HFImage
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(16)]
    imgs[0] = imgs[0].convert("L")
    imgs[5] = imgs[5].convert("RGBA")
    feats = Features({"image": HFImage(), "label": ClassLabel(names=["a", "b", "c"])})
    path = tmp_path_factory.mktemp("hf") / "images"
    DatasetDict({"train": Dataset.from_dict({"image": imgs[:12], "label": [i % 3 for i in range(12)]}, features=feats),
                 "test": Dataset.from_dict({"image": imgs[12:], "label": [0, 1, 2, 0]}, features=feats)}
                ).save_to_disk(str(path))
    return path, imgs


@pytest.fixture
def decodes(monkeypatch):
    """Counts the images decoded (sources.decode calls)."""
    count = [0]
    real = sources.decode

    def counting(*a, **k):
        count[0] += 1
        return real(*a, **k)
    monkeypatch.setattr(sources, "decode", counting)
    return count


def test_loading_decodes_only_the_statistics_sample(saved, decodes, monkeypatch, capsys):
    path, imgs = saved
    monkeypatch.setattr(sources, "STATS_SAMPLES", 4)
    d = ImageDomain(data={"path": str(path)})
    tr, te = d.dataset("train"), d.dataset("test")
    assert decodes[0] == 4  # 4 of the 12 training rows, no test row
    assert d.channels == 3 and d.image_size == 48 and d.num_classes == 3  # one gray row does not make it gray
    assert "12 of the 12 training images" in capsys.readouterr().err
    assert tr.labels == [i % 3 for i in range(12)] and te.labels == [0, 1, 2, 0]
    item = tr[7]
    assert decodes[0] == 4 + 1 and item["y"] == 1
    x = item["x"]
    want = torch.from_numpy(np.array(imgs[7])).permute(2, 0, 1)[:, :, 8:56]  # centre crop of 64 -> 48
    assert x.dtype == torch.uint8 and torch.equal(x, want)
    assert torch.equal(tr[0]["x"], tr[0]["x"][:1].expand(3, -1, -1))  # the gray row: three equal channels


def test_a_domain_from_state_decodes_nothing_at_load(saved, decodes, monkeypatch):
    path, _ = saved
    first = ImageDomain(data={"path": str(path)})
    first.dataset("train")
    decodes[0] = 0
    monkeypatch.setattr(image_domain, "survey", lambda *a, **k: pytest.fail("headers read for the size"))
    d = ImageDomain(data={"path": str(path)}, state=first.state())
    tr = d.dataset("train")
    d.dataset("test")
    assert decodes[0] == 0 and d.num_classes == 3  # class_count read the label column alone
    assert torch.equal(tr[3]["x"], first.dataset("train")[3]["x"]) and d.state() == first.state()


def test_the_split_holds_no_decoded_image_and_pickles_as_a_reference(saved):
    path, _ = saved
    d = ImageDomain(data={"path": str(path)})
    tr = d.dataset("train")
    held = [*vars(tr).values(), *vars(tr.read).values()]
    assert not any(torch.is_tensor(v) or isinstance(v, (Image.Image, np.ndarray)) for v in held)
    assert isinstance(tr.files, range)
    stored = sum(f.stat().st_size for f in path.rglob("*.arrow"))
    blob = pickle.dumps(tr)  # what a loader worker receives
    assert len(blob) < stored / 10
    assert torch.equal(pickle.loads(blob)[5]["x"], tr[5]["x"])


def test_an_unreadable_row_is_named_or_skipped(tmp_path):
    from datasets import Dataset
    from datasets import Image as HFImage
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
    good = {"bytes": buf.getvalue(), "path": None}
    bad = {"bytes": b"not an image", "path": None}
    ds = Dataset.from_dict({"image": [good, bad, good]}).cast_column("image", HFImage())
    ds.save_to_disk(str(tmp_path / "hf"))
    state = {"image_size": 8, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3, "patch_size": 2}
    tr = ImageDomain(data={"path": str(tmp_path / "hf")}, state=state).dataset("train")
    with pytest.raises(UserError, match="row 1 of HF dataset"):
        tr[1]
    skip = ImageDomain(data={"path": str(tmp_path / "hf"), "skip_bad": True}, state=state).dataset("train")
    assert skip[1]["skipped"] == 1 and skip[1]["x"][:, 0, 0].tolist() == [1, 2, 3]
