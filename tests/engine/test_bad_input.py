"""What a user's data does wrong, handled as a user expects and said in one line: a batch larger than the training set,
held-out labels that training never saw, a UserError raised inside a loader worker."""
import numpy as np
import pytest
from PIL import Image

from multissl.data import train_loader
from multissl.domains.image import ImageDomain
from multissl.errors import UserError
from multissl.registry import read_yaml


def images(folder, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_a_batch_larger_than_the_training_set_takes_each_sample_once(tiny, tmp_path, capsys):
    images(tmp_path / "data", 3)
    folder = tiny.run(f"data.path={tmp_path / 'data'}", "data.batch_size=64", "trainer.max_steps=2")
    err = capsys.readouterr().err
    assert "data.batch_size=64 is more than the 3 training samples: each step takes 3" in err
    assert read_yaml(folder / "config.yaml")["data"]["batch_size"] == 3
    assert [r["step"] for r in tiny.metrics(folder) if "loss" in r] == [1, 2]


def test_a_training_set_smaller_than_the_processes_is_one_line(tiny, tmp_path):
    images(tmp_path / "data", 1)
    with pytest.raises(UserError, match=r"holds 1 sample\(s\), fewer than 1 process.*trainer.accumulate=2"):
        tiny.run(f"data.path={tmp_path / 'data'}", "trainer.accumulate=2", "trainer.max_steps=1")


def test_held_out_classes_that_training_never_saw_are_scored_as_unlabelled(tiny, tmp_path, capsys):
    for split, classes in (("train", ("cat", "dog")), ("test", ("cats", "dogs"))):
        for c in classes:
            images(tmp_path / "data" / split / c, 4, seed=len(c))
    folder = tiny.run(f"data.path={tmp_path / 'data'}", "data.batch_size=8", "trainer.max_steps=1")
    err = capsys.readouterr().err
    assert "8 held-out samples in " in err and "have labels training never saw (cats, dogs): scored as unlabelled" in err
    final = tiny.metrics(folder)[-1]
    assert "knn_acc" not in final and "rankme" in final  # nothing labelled to score, and no crash


def test_a_user_error_in_a_loader_worker_is_its_one_line(tmp_path):
    images(tmp_path / "data", 4)
    (tmp_path / "data" / "2.png").write_bytes((tmp_path / "data" / "2.png").read_bytes()[:60])  # header, no pixels
    domain = ImageDomain(image_size=12, channels=3, data={"path": str(tmp_path / "data")})
    domain.mean, domain.std = [0.5] * 3, [0.25] * 3  # as given by a state: the bad file is read in a worker first
    domain.crop_scale, domain.flip = (0.5, 1.0), 0.0
    loader = train_loader(domain.dataset("train"), domain, 0, 2, 4, 0, 1, 0, 1, workers=1)
    with pytest.raises(UserError) as e:
        next(iter(loader))
    assert str(e.value).startswith("cannot read image ") and "2.png" in str(e.value)
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value) and "worker" not in str(e.value)
