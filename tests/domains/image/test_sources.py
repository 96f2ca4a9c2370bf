"""Image domain data: embedded digits, image folders (labels, sizes, bad files, skip_bad) and saved HF datasets."""
import sys

import numpy as np
import pytest
import torch

from multissl.domains.image import ImageDomain, read_image
from multissl.errors import UserError


def all_x(ds):
    return [ds[i]["x"] for i in range(len(ds))]


def all_y(ds):
    return [ds[i]["y"] for i in range(len(ds))]


# ---- default data: digits -----------------------------------------------------------------------

def test_digits_split_sizes_disjoint_and_complete(digits):
    tr, te = digits.dataset("train"), digits.dataset("test")
    assert len(tr) + len(te) == 1797
    assert len(te) == 1797 // 5
    tr_b = {x.numpy().tobytes() for x in all_x(tr)}
    te_b = {x.numpy().tobytes() for x in all_x(te)}
    assert len(tr_b) == len(tr) and len(te_b) == len(te)  # digits has no duplicate images
    assert not tr_b & te_b


def test_digits_samples_are_uint8_8x8_with_digit_labels(digits):
    tr = digits.dataset("train")
    x = torch.stack(all_x(tr))
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8)
    assert int(x.min()) == 0 and int(x.max()) == 255
    assert set(all_y(tr)) == set(range(10))
    assert set(all_y(digits.dataset("test"))) <= set(range(10))


def test_digits_are_read_from_the_cache_once_kept_without_scikit_learn(tmp_path, monkeypatch):
    """The first read keeps sklearn's digits in the cache (as uint8 0..255); later processes read them from there, so
    a run on the embedded default starts without importing scikit-learn."""
    from sklearn.datasets import load_digits

    from multissl.domains.image.sources import digits
    reference = load_digits()
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path))
    digits()
    assert len(list(tmp_path.glob("digits_*.npz"))) == 1
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # importing it now fails
    kept = digits()
    assert kept["x"].dtype == np.uint8 and np.array_equal(kept["x"], (reference.images * 255 / 16).round())
    assert np.array_equal(kept["y"], reference.target)


def test_digits_split_is_fixed_across_fresh_domains():
    a, b = ImageDomain(), ImageDomain(mask_ratio=0.5)  # other hyperparameters do not move the split
    for split in ("train", "test"):
        xa, xb = torch.stack(all_x(a.dataset(split))), torch.stack(all_x(b.dataset(split)))
        assert torch.equal(xa, xb)
        assert all_y(a.dataset(split)) == all_y(b.dataset(split))


def test_digits_domain_attributes_and_stats(digits):
    assert digits.num_classes == 10
    assert digits.channels == 1 and digits.image_size == 8
    x = torch.stack(all_x(digits.dataset("train"))).float() / 255
    assert digits.mean == pytest.approx([x.mean().item()], abs=1e-4)
    assert digits.std == pytest.approx([x.std().item()], abs=1e-4)


def test_unknown_split_is_none(digits):
    assert digits.dataset("validation") is None


# ---- image folders ------------------------------------------------------------------------------

def _png(path, w, h, value, mode="RGB"):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    Image.fromarray(np.full(shape, value, np.uint8), mode).save(path)


@pytest.fixture
def folder(tmp_path):
    """train/{cat,dog} and test/dog; 12x12 RGB except one 16x10 (wider than tall)."""
    root = tmp_path / "imgs"
    _png(root / "train" / "cat" / "a.png", 12, 12, 10)
    _png(root / "train" / "cat" / "b.png", 16, 10, 20)
    _png(root / "train" / "dog" / "c.png", 12, 12, 200)
    _png(root / "test" / "dog" / "d.png", 12, 12, 210)
    return root


def test_folder_labels_from_subfolders(folder):
    d = ImageDomain(data={"path": str(folder), "skip_bad": False})
    tr = d.dataset("train")
    assert len(tr) == 3
    assert all_y(tr) == [0, 0, 1]  # cat=0, dog=1 (sorted class names)
    assert d.num_classes == 2


def test_folder_test_labels_use_train_mapping(folder):
    d = ImageDomain(data={"path": str(folder)})
    te = d.dataset("test")
    assert len(te) == 1
    assert all_y(te) == [1]  # dog is 1 in train; test alone has only one class


def test_folder_channels_size_and_resize_crop(folder):
    d = ImageDomain(data={"path": str(folder)})
    tr = d.dataset("train")
    assert d.channels == 3 and d.image_size == 12
    xs = all_x(tr)
    assert all(x.dtype == torch.uint8 and x.shape == (3, 12, 12) for x in xs)
    assert torch.all(xs[1] == 20)  # the 16x10 one: resized + centre-cropped, content kept
    assert d.dataset("test")[0]["x"].shape == (3, 12, 12)
    assert len(d.mean) == 3 and len(d.std) == 3


def test_folder_image_size_override_resizes(folder):
    d = ImageDomain(image_size=8, data={"path": str(folder)})
    xs = all_x(d.dataset("train")) + all_x(d.dataset("test"))
    assert d.image_size == 8
    assert all(x.shape == (3, 8, 8) for x in xs)


def test_folder_grayscale_images_give_one_channel(tmp_path):
    _png(tmp_path / "a.png", 8, 8, 50, mode="L")
    _png(tmp_path / "b.png", 8, 8, 60, mode="L")
    d = ImageDomain(data={"path": str(tmp_path)})
    assert d.dataset("train")[0]["x"].shape == (1, 8, 8)
    assert d.channels == 1


def test_folder_without_subfolders_is_unlabeled(tmp_path):
    _png(tmp_path / "a.png", 12, 12, 1)
    _png(tmp_path / "b.png", 12, 12, 2)
    d = ImageDomain(data={"path": str(tmp_path)})
    tr = d.dataset("train")
    assert len(tr) == 2 and all_y(tr) == [-1, -1]
    assert d.num_classes is None
    assert d.dataset("test") is None


def test_folder_without_images_is_user_error(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    d = ImageDomain(data={"path": str(tmp_path)})
    with pytest.raises(UserError, match="no images") as e:
        d.dataset("train")
    assert str(tmp_path / "train") in str(e.value)


def test_missing_path_is_user_error_naming_it(tmp_path):
    missing = tmp_path / "does_not_exist"
    d = ImageDomain(data={"path": str(missing)})
    with pytest.raises(UserError, match="does not exist") as e:
        d.dataset("train")
    assert str(missing) in str(e.value)


def test_missing_relative_path_is_user_error_not_a_hub_lookup(tmp_path, monkeypatch):
    """A mistyped relative folder like `nothere/images` must fail with a one-line UserError naming it
    (offline mode keeps this test from retrying the network)."""
    import datasets
    import huggingface_hub.constants as hub_constants
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.chdir(tmp_path)
    d = ImageDomain(data={"path": "nothere/images"})
    with pytest.raises(UserError, match="nothere/images"):
        d.dataset("train")


def test_corrupt_image_is_user_error_naming_the_file(folder):
    bad = folder / "train" / "dog" / "x.png"
    bad.write_bytes(b"this is not a png \x00\x01\x02" * 10)
    d = ImageDomain(data={"path": str(folder), "skip_bad": False})
    with pytest.raises(UserError, match="x.png") as e:
        d.dataset("train")
        for i in range(len(d.dataset("train"))):
            d.dataset("train")[i]
    assert str(bad) in str(e.value)
    assert "\n" not in str(e.value)


def test_read_image_on_corrupt_file_is_user_error(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="x.png"):
        read_image(bad, 3, 8)


def test_corrupt_first_image_is_user_error_naming_the_file(tmp_path):
    bad = tmp_path / "a.png"  # sorted first: it is the one probed for channels/size
    bad.write_bytes(b"garbage")
    _png(tmp_path / "b.png", 8, 8, 1)
    d = ImageDomain(data={"path": str(tmp_path)})
    with pytest.raises(UserError) as e:
        d.dataset("train")
    assert str(bad) in str(e.value)


def test_skip_bad_skips_unreadable_images(folder):
    """configs/train.yaml: `skip_bad: true` skips unreadable samples instead of failing."""
    (folder / "train" / "dog" / "x.png").write_bytes(b"garbage")
    d = ImageDomain(data={"path": str(folder), "skip_bad": True})
    tr = d.dataset("train")
    xs = [tr[i]["x"] for i in range(len(tr))]
    assert all(x.shape == (3, 12, 12) for x in xs)


# ---- saved HF datasets --------------------------------------------------------------------------

def _hf_images(n, size=(10, 10)):
    from PIL import Image
    return [Image.fromarray(np.full((size[1], size[0], 3), 20 * i, np.uint8)) for i in range(n)]


def test_hf_saved_dataset_with_labels(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    feats = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c"])})
    dd = DatasetDict({
        "train": Dataset.from_dict({"image": _hf_images(4), "label": [0, 1, 2, 1]}, features=feats),
        "test": Dataset.from_dict({"image": _hf_images(2), "label": [2, 0]}, features=feats),
    })
    dd.save_to_disk(str(tmp_path / "hf"))
    d = ImageDomain(data={"path": str(tmp_path / "hf")})
    tr, te = d.dataset("train"), d.dataset("test")
    assert len(tr) == 4 and len(te) == 2
    assert all_y(tr) == [0, 1, 2, 1] and all_y(te) == [2, 0]
    assert d.channels == 3 and d.image_size == 10 and d.num_classes == 3
    assert tr[2]["x"].dtype == torch.uint8 and tr[2]["x"].shape == (3, 10, 10)
    assert torch.all(tr[2]["x"] == 40)


def test_hf_saved_dataset_unlabeled_and_resized(tmp_path):
    from datasets import Dataset, Features, Image
    ds = Dataset.from_dict({"image": _hf_images(3, size=(16, 12))}, features=Features({"image": Image()}))
    ds.save_to_disk(str(tmp_path / "hf"))
    d = ImageDomain(data={"path": str(tmp_path / "hf")})
    tr = d.dataset("train")
    assert all_y(tr) == [-1, -1, -1] and d.num_classes is None
    assert tr[0]["x"].shape == (3, 12, 12)
    assert d.dataset("test") is None


def test_hf_saved_dataset_without_image_column_is_user_error(tmp_path):
    from datasets import Dataset, DatasetDict
    DatasetDict({"train": Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})}).save_to_disk(str(tmp_path / "hf"))
    d = ImageDomain(data={"path": str(tmp_path / "hf")})
    with pytest.raises(UserError, match="no Image column"):
        d.dataset("train")


def test_hf_saved_dataset_without_train_split_is_user_error(tmp_path):
    from datasets import Dataset, DatasetDict, Features, Image
    ds = Dataset.from_dict({"image": _hf_images(2)}, features=Features({"image": Image()}))
    DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "hf"))
    d = ImageDomain(data={"path": str(tmp_path / "hf")})
    with pytest.raises(UserError, match="train"):
        d.dataset("train")


def test_hf_dataset_without_the_datasets_package_is_user_error(tmp_path, monkeypatch):
    """`datasets` is only needed for HF data: without it, one line says what needs it and how to install."""
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    d = ImageDomain(data={"path": "hf:someone/images"})
    with pytest.raises(UserError, match=r"HF dataset in data.path needs .*'datasets'.*pip install datasets") as e:
        d.dataset("train")
    assert "\n" not in str(e.value)


def test_state_of_folder_domain_roundtrips(folder):
    d = ImageDomain(image_size=8, data={"path": str(folder)})
    d.dataset("train")
    e = ImageDomain(state=d.state())
    x = torch.randint(0, 256, (2, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert e.channels == 3 and torch.equal(e.preprocess(x), d.preprocess(x))
