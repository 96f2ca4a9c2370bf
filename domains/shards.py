"""Shards: a domain's data written once as LitData chunks (`python -m multissl.shards`), read from a local folder or
object storage (s3://, gs://, azure://, hf://, r2://: LitData's storage) with the same samples, order, labels and
classes as the files they came from, so a run from shards is the run from its files.

Why LitData: its chunks are read by index (`StreamingDataset[i]`), so a step still sees the samples the engine's
sampler names for (seed, step, position in the global batch) — whatever the processes, workers or a resume — where
tar shards (webdataset) and HF streaming read in an order of their own. MosaicML streaming pins older numpy.

Every item is one payload of bytes (an image, audio or video file as it was stored, an .npy of a clip, a text in
UTF-8, a block of a table as parquet, a block of a buffer as .npz): what it means is the meta file's `form`, which
the domain that wrote it reads back. The meta file (META, JSON, written last) holds the domain, the form, the
classes, each split's count and labels (so labels need no pass over the items), and form-specific `info`.

Media (images, audio, video, clips) are read per item from the chunks (memory-mapped by LitData); a remote chunk is
copied into the multissl cache the first time one of its items is read, so later epochs read the local disk (the
cache then holds up to the whole dataset). Corpora, tables and buffers are streamed once in order into the cache
the domain keeps for its own files."""
import hashlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from multissl.errors import UserError, reason, require

from .cache import default_cache_dir, publish

META = "multissl-shards.json"
FORMAT, VERSION = "multissl-shards", 1
REMOTE = ("s3://", "gs://", "azure://", "hf://", "r2://", "local:")  # LitData's storage prefixes
CHUNK_BYTES = "64MB"  # LitData's default: large enough for object storage, small enough to fetch on demand
PURPOSE = "shards (data.path of a shard folder or URL, or python -m multissl.shards)"


@dataclass
class Records:
    """One split of a domain's data as shard items, in the order the domain reads its files: `payloads()` yields
    `count` byte strings; `labels` one class id per item (-1 none) or None (the form's items carry no label: table
    and buffer blocks); `classes` the class names; `info` what the form's reader needs besides (JSON)."""
    form: str
    count: int
    payloads: Callable[[], Iterable[bytes]]
    labels: list[int] | None = None
    classes: list[str] | None = None
    info: dict = field(default_factory=dict)


def is_remote(path) -> bool:
    return isinstance(path, str) and path.startswith(REMOTE)


def is_shards(path) -> bool:
    """data.path names shards: a remote URL, or a local folder holding META."""
    return is_remote(path) or (isinstance(path, (str, os.PathLike)) and (Path(path).expanduser() / META).is_file())


# ---- writing -----------------------------------------------------------------------------------------------------

def write(domain: str, splits: dict[str, Records], out, source: str, chunk_bytes: str = CHUNK_BYTES) -> dict:
    """Each split's payloads into out/<split>/ (LitData chunks + index.json), then META: the folder is complete
    once META exists. `out` must be new or empty; a folder a killed writer left (no META) is written again."""
    require("litdata", PURPOSE)
    from litdata.streaming.writer import BinaryWriter
    out = Path(out).expanduser()
    if (out / META).exists() or (out.is_dir() and any(p.name not in splits for p in out.iterdir())):
        raise UserError(f"{out} is not empty; write shards into a new folder (or remove it first)")
    forms = {r.form for r in splits.values()}
    if len(forms) != 1:
        raise UserError(f"the splits of {source} would be written as different forms ({', '.join(sorted(forms))})")
    meta = {"format": FORMAT, "version": VERSION, "written": uuid.uuid4().hex,  # a new version at each write
            "domain": domain, "form": forms.pop(), "source": source,
            "classes": splits["train"].classes, "info": splits["train"].info, "splits": {}}
    for split, rec in splits.items():
        shutil.rmtree(out / split, ignore_errors=True)
        writer = BinaryWriter(str(out / split), chunk_bytes=chunk_bytes)
        n = 0
        for n, payload in enumerate(rec.payloads(), 1):
            # an array leaf keeps LitData's plain item layout (items of JSON-able leaves alone get an Arrow footer)
            writer[n - 1] = {"data": np.frombuffer(bytes(payload) or b"\0", np.uint8), "size": len(payload)}
        if n != rec.count:
            raise UserError(f"{source}: the {split} split gave {n} items where {rec.count} were listed; it changed "
                            f"while being written: write the shards again")
        writer.done()
        writer.merge()
        meta["splits"][split] = {"count": n, "labels": rec.labels}
    (out / META).write_text(json.dumps(meta))
    return meta


# ---- reading -----------------------------------------------------------------------------------------------------

def cache_folder(url: str) -> Path:
    """Where remote shards' chunks are kept: one folder per URL (then per version and split)."""
    return default_cache_dir() / "shards" / hashlib.sha256(url.encode()).hexdigest()[:24]


def fetch(url: str) -> bytes:
    """One remote file's bytes, through LitData's storage client for the URL's scheme (boto3 for S3: the AWS_*
    variables, AWS_ENDPOINT_URL for an S3-compatible server). Its client, not LitData's chunk prefetcher: that one
    starts a runtime (obstore) that loader workers forked after it cannot use."""
    from litdata.streaming.downloader import get_downloader
    buf = io.BytesIO()
    get_downloader(url, str(cache_folder(url)), []).download_fileobj(url, buf)
    return buf.getvalue()


class Items:
    """Item j of a split's chunks, as bytes, by index. Local chunks are read where they are; remote ones are copied
    into `folder` (the cache) a chunk at a time, the first time one of their items is asked for, and read from there
    (so an epoch after the first reads the local disk). The LitData dataset is opened in each process on first use
    and never pickled, so loader workers open their own."""

    def __init__(self, url: str, count: int, folder: Path | None = None):
        self.url, self.count, self.folder, self._ds = url, count, folder, None

    def __len__(self) -> int:
        return self.count

    def _open(self):
        from litdata import StreamingDataset
        where = self.url
        if self.folder is not None:
            if not (self.folder / "index.json").is_file():
                index = fetch(f"{self.url}/index.json")
                publish(lambda f: f.write(index), self.folder / "index.json")
            chunks = json.loads((self.folder / "index.json").read_text())["chunks"]
            self._ends = np.cumsum([c["chunk_size"] for c in chunks])  # item j is in the first chunk ending after it
            self._names = [c["filename"] for c in chunks]
            where = str(self.folder)
        # batch_decode off: LitData decodes a run of items around the one asked for, which suits iteration in order,
        # not reading by index (a hundred times slower per item here)
        self._ds = os.getpid(), StreamingDataset(where, batch_decode=False)

    def __getitem__(self, j: int) -> bytes:
        if self._ds is None or self._ds[0] != os.getpid():
            self._open()
        if self.folder is not None:
            name = self._names[int(np.searchsorted(self._ends, j, side="right"))]
            if not (self.folder / name).is_file():
                data = fetch(f"{self.url}/{name}")
                publish(lambda f: f.write(data), self.folder / name)
        item = self._ds[1][int(j)]
        return item["data"].tobytes()[:int(item["size"])]

    def __getstate__(self):
        return {**self.__dict__, "_ds": None}


class Shards:
    """A shard folder or URL, opened for `domain`: its META checked, each split's count, labels and items."""

    def __init__(self, path, domain: str):
        require("litdata", PURPOSE)
        self.url = str(path).rstrip("/") if is_remote(path) else str(Path(path).expanduser().resolve())
        try:
            raw = fetch(f"{self.url}/{META}") if is_remote(path) else (Path(self.url) / META).read_bytes()
            self.meta = json.loads(raw)
        except (OSError, ValueError, Exception) as e:  # any storage client's error: one line
            raise UserError(f"cannot read shards at {path}: {e.__class__.__name__}: {reason(e)}; point data.path at "
                            f"a folder (or URL) written by python -m multissl.shards, with its {META}") from None
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise UserError(f"{path}/{META} is not multissl shards of version {VERSION}; write them again with "
                            f"python -m multissl.shards")
        if self.meta["domain"] != domain:
            raise UserError(f"data.path {path} holds shards of the {self.meta['domain']} domain; train them with "
                            f"domain={self.meta['domain']}, or write shards for domain={domain}")
        self.version = hashlib.sha256(raw).hexdigest()[:24]  # META names each write: a rewrite is a new version
        self.form, self.classes, self.info = self.meta["form"], self.meta.get("classes"), self.meta.get("info", {})

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    def count(self, split: str) -> int:
        return self.meta["splits"][split]["count"]

    def labels(self, split: str) -> list[int]:
        return self.meta["splits"][split]["labels"] or [-1] * self.count(split)

    def items(self, split: str) -> Items:
        """The split's items by index; remote chunks copied into the cache as they are first read."""
        folder = cache_folder(self.url) / self.version / split if is_remote(self.url) else None
        return Items(f"{self.url}/{split}", self.count(split), folder)

    def stream(self, split: str) -> Iterator[bytes]:
        """The split's payloads in order (what corpora, tables and buffers are converted from). A remote split's
        chunks, copied to read them, are removed once the last payload was read: the domain keeps its own
        conversion, and the copy would double the disk it takes."""
        items = self.items(split)
        yield from (items[j] for j in range(len(items)))
        if items.folder is not None:
            items._ds = None  # LitData's handle on the copied chunks
            shutil.rmtree(items.folder, ignore_errors=True)


# ---- the "files" form: media stored as the files they were (images, audio, video) ---------------------------------

def file_records(count: int, payload: Callable[[int], bytes], labels: list[int], classes: dict | None,
                 info: dict | None = None) -> Records:
    """A split of sample files as items: payload(j) the bytes of file j as stored; `classes` {name: id}."""
    names = sorted(classes or {}, key=classes.get) if classes else None
    return Records("files", count, lambda: (payload(j) for j in range(count)), list(labels), names, info or {})


def source_bytes(source) -> bytes:
    """What rows.Rows.source gives (a file-like or a path) as bytes."""
    return source.getvalue() if isinstance(source, io.BytesIO) else Path(source).read_bytes()


class Payloads:
    """Item j of a split as a file-like object, decoded by `read(source, name=...)` when called: what rows.Rows is
    for an HF split."""

    def __init__(self, shards: Shards, split: str, read=None):
        self.items, self.url, self.split, self.read = shards.items(split), shards.url, split, read

    def __len__(self) -> int:
        return len(self.items)

    def source(self, j: int) -> io.BytesIO:
        return io.BytesIO(self.items[j])

    def name(self, j: int) -> str:
        return f"item {j} of the {self.split} shards at {self.url}"

    def __call__(self, j: int):
        return self.read(self.source(j), name=self.name(j))


def file_split(shards: Shards, split: str, read, skip_bad: bool):
    """A split of the "files" form as files.Files over item numbers, read and skipped as files are."""
    from .files import Files
    classes = {c: k for k, c in enumerate(shards.classes or [])}
    return Files(range(shards.count(split)), shards.labels(split), classes, Payloads(shards, split, read), skip_bad)


def folder_records(root: Path, extensions) -> dict[str, Records]:
    """A folder of sample files (train/ and test/ honoured, class subfolders label them) as files.scan and
    files.labelled list it for training."""
    from .files import labelled, scan, split_folders
    out, classes = {}, None
    for split, d in split_folders(root).items():
        files = scan(d, extensions)
        if not files:
            raise UserError(f"no files ({', '.join(sorted(extensions))}) under {d}; nothing to write")
        labels, classes = labelled(files, d, classes)
        out[split] = file_records(len(files), lambda j, files=files: files[j].read_bytes(), labels, classes)
    return out


def row_records(splits: dict, column: str, feature, label: str | None, where: str) -> dict[str, Records]:
    """The media column of HF splits as the files its rows store (rows.Rows), labels from the label column."""
    from .rows import Rows, column_labels
    out = {}
    for split, ds in splits.items():
        rows = Rows(ds, column, feature, where)
        names = getattr(ds.features[label], "names", None) if label else None
        out[split] = file_records(len(rows), lambda j, rows=rows: source_bytes(rows.source(j)),
                                  column_labels(ds, label, where), {n: k for k, n in enumerate(names or [])})
    return out
