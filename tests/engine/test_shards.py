"""Shards (python -m multissl.shards, domains/shards.py): what the writer keeps and refuses, a run from shards is the
run from their files, and shards in object storage (a local S3 server on 127.0.0.1) train as the local folder
does. The promise from shards across processes, workers and a SIGKILL is checked where it is checked for files:
tests/engine/test_data.py, test_distributed.py and test_guards.py take a shard-backed dataset too."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multissl.domains.shards import META, Shards
from multissl.errors import UserError
from multissl.shards import convert

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
    """A local S3 server (moto) on 127.0.0.1 with a bucket; boto3 (LitData's S3 client) pointed at it."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        for k, v in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                     "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "cache"))
        client = boto3.client("s3")
        client.create_bucket(Bucket="data")
        yield client
    finally:
        server.terminate()
        server.wait(30)


def upload(client, folder: Path, prefix: str):
    for f in folder.rglob("*"):
        if f.is_file():
            client.upload_file(str(f), "data", f"{prefix}/{f.relative_to(folder).as_posix()}")


def test_shards_in_object_storage_train_as_the_local_folder(tiny, tmp_path, s3):
    shards = write_image_shards(tmp_path)
    upload(s3, shards, "photos")
    url = "s3://data/photos"
    remote = Shards(url, "image")
    assert remote.meta == Shards(shards, "image").meta
    assert list(remote.stream("test")) == list(Shards(shards, "image").stream("test"))  # copied once, in order
    args = ("trainer.max_steps=2", "data.batch_size=16")
    assert final(tiny.run(f"data.path={url}", *args, name="s3")) == final(tiny.run(f"data.path={shards}", *args))
    with pytest.raises(UserError, match="cannot read shards at s3://data/nothing"):
        Shards("s3://data/nothing", "image")


def test_a_folder_that_is_not_shards_is_read_as_files(tmp_path):
    folder = write_image_folder(tmp_path / "images", 6, 3)
    from multissl.domains.files import locate
    assert locate(str(folder), "images")[0] == "folder"
    assert locate("s3://bucket/prefix", "images") == ("shards", "s3://bucket/prefix")
    assert not os.path.exists(folder / META)
