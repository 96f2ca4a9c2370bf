"""Shards (python -m multissl.shards, domains/shards.py): what the writer keeps and refuses, a run from shards is the
run from their files, and shards in object storage (a local S3 server on 127.0.0.1) train as the local folder
does. The promise from shards across processes, workers and a SIGKILL is checked where it is checked for files:
tests/engine/test_data.py, test_distributed.py and test_guards.py take a shard-backed dataset too."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import multissl.domains.shards as shard_module
from multissl.domains.shards import META, Shards
from multissl.errors import UserError
from multissl.shards import convert
from multissl.testing.storage import local_s3

from tiny import write_image_folder, write_image_shards


def shards_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "multissl.shards", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True)


def test_the_writer_keeps_order_labels_and_classes_and_refuses_what_it_cannot_write(tmp_path):
    shards = write_image_shards(tmp_path)
    meta = json.loads((shards / META).read_text())
    assert meta["domain"] == "image" and meta["form"] == "files" and meta["classes"] == ["blue", "green", "red"]
    opened = Shards(shards, "image")
    files = sorted((tmp_path / "images" / "test").rglob("*.png"))  # files.scan's order
    assert [opened.items("test")[j] for j in range(len(files))] == [f.read_bytes() for f in files]
    assert opened.labels("test") == [meta["classes"].index(f.parent.name) for f in files]
    assert list(opened.stream("train")) == [f.read_bytes() for f in sorted((tmp_path / "images" / "train").rglob("*.png"))]
    with pytest.raises(UserError, match="holds shards of the image domain; train them with domain=image"):
        Shards(shards, "audio")
    with pytest.raises(UserError, match="not empty"):
        convert(str(tmp_path / "images"), str(shards), ["domain=image"])
    with pytest.raises(UserError, match="already holds shards"):
        convert(str(shards), str(tmp_path / "again"), ["domain=image"])
    no_domain = shards_cli(tmp_path / "images", tmp_path / "new")
    assert no_domain.returncode == 2 and "name the domain" in no_domain.stderr
    assert len(no_domain.stderr.strip().splitlines()) == 1 and not (tmp_path / "new").exists()


def final(folder: Path) -> tuple[list, dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
    return [r["loss"] for r in rows if "loss" in r], {k: v for k, v in rows[-1].items() if k != "time"}


def test_a_run_from_shards_is_the_run_from_their_files(tiny, tmp_path):
    shards = write_image_shards(tmp_path)
    args = ("trainer.max_steps=3", "data.batch_size=16")
    files = tiny.run(f"data.path={tmp_path / 'images'}", *args, name="files")
    from_shards = tiny.run(f"data.path={shards}", *args, name="shards")
    assert final(from_shards) == final(files)  # every loss, and the held-out kNN, probe and spectra at the end
    assert "knn_acc" in final(files)[1]


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """A local S3 server (moto) on 127.0.0.1 with a bucket, boto3 (LitData's S3 client) pointed at it."""
    pytest.importorskip("moto")
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "cache"))
    with local_s3("data") as bucket:
        yield bucket


def test_shards_in_object_storage_train_as_the_local_folder(tiny, tmp_path, s3, monkeypatch):
    shards = write_image_shards(tmp_path)
    url = s3.upload(shards, "photos")
    remote = Shards(url, "image")
    assert remote.meta == Shards(shards, "image").meta
    assert list(remote.stream("test")) == list(Shards(shards, "image").stream("test"))  # copied, in order
    assert not remote.items("test").folder.exists()  # and the copy removed: what streams is converted elsewhere
    args = ("trainer.max_steps=2", "data.batch_size=16")
    assert final(tiny.run(f"data.path={url}", *args, name="s3")) == final(tiny.run(f"data.path={shards}", *args))
    with pytest.raises(UserError, match="cannot read shards at s3://data/nothing"):
        Shards("s3://data/nothing", "image")
    # every chunk was copied into the cache once, as its first item was read: later reads stay on this machine
    copied = remote.items("train")
    assert copied.folder.is_relative_to(tmp_path / "cache") and {p.name for p in copied.folder.iterdir()} == \
        {p.name for p in (shards / "train").iterdir()}
    monkeypatch.setattr(shard_module, "fetch", lambda url: pytest.fail(f"fetched {url} again"))
    assert copied[len(copied) - 1] == Shards(shards, "image").items("train")[len(copied) - 1]


def test_a_folder_that_is_not_shards_is_read_as_files(tmp_path):
    folder = write_image_folder(tmp_path / "images", 6, 3)
    from multissl.domains.files import locate
    assert locate(str(folder), "images")[0] == "folder"
    assert locate("s3://bucket/prefix", "images") == ("shards", "s3://bucket/prefix")
    assert not os.path.exists(folder / META)
