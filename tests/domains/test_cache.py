"""The cache root for generated default data, its atomic writer, and its one maker at a time."""
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from multissl.domains.cache import default_cache_dir, one_maker, save_npz


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "m"))
    assert default_cache_dir() == tmp_path / "m"
    monkeypatch.delenv("MULTISSL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "multissl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert default_cache_dir() == tmp_path / "h" / ".cache" / "multissl"


def test_save_npz_publishes_once_and_leaves_no_temporary(tmp_path):
    """Processes that generate the same default at once all read the one published first (a second generation need
    not give the same bytes); nothing half-written or temporary stays behind."""
    path = tmp_path / "sub" / "a.npz"
    save_npz(path, {"x": np.arange(3)})
    save_npz(path, {"x": np.arange(4)})  # a second writer of the same name: the first one's file stays
    with np.load(path) as z:
        assert z["x"].tolist() == [0, 1, 2]
    assert [p.name for p in path.parent.iterdir()] == ["a.npz"]


def test_a_tokenizer_trained_twice_at_once_is_the_first_published_for_both(tmp_path, monkeypatch):
    """Two trainings of a tokenizer on the same texts need not give the same ids: a process that trained one after
    another process published it uses the published one."""
    from multissl.domains.text import tokenizer
    texts = ["a first text", "and a second one", "the third"] * 20
    first = tokenizer.cached("wordpiece", 64, True, texts, tmp_path)
    (path,) = (tmp_path / "text").glob("tokenizer-*.json")
    path.unlink()
    real = tokenizer.build

    def published_meanwhile(*args):  # another process publishes while this one trains
        path.write_text(first, encoding="utf-8")
        return real("bpe", *args[1:])  # whose result differs
    monkeypatch.setattr(tokenizer, "build", published_meanwhile)
    assert tokenizer.cached("wordpiece", 64, True, texts, tmp_path) == first
    assert sorted(p.name for p in path.parent.iterdir()) == [f".{path.name}.lock", path.name]  # no temporary


def test_stale_conversions_are_removed_and_only_they(tmp_path):
    """Conversions of two files under one root: changing one removes its folder only; a folder whose manifest was
    never written (a conversion under way) is left alone."""
    import os
    from multissl.domains.cache import complete, file_version, finish, forget_stale, version_folder
    root, sources = tmp_path / "root", [tmp_path / "a.npz", tmp_path / "b.npz"]
    folders = []
    for s in sources:
        s.write_bytes(b"x")
        folder = version_folder(root, file_version(s))
        folder.mkdir(parents=True)
        finish(folder, "source.json", file_version(s))
        folders.append(folder)
    under_way = root / "under-way"
    under_way.mkdir()
    assert all(complete(f, "source.json") for f in folders) and not complete(under_way, "source.json")
    forget_stale(root, "source.json")
    assert all(f.is_dir() for f in folders)  # nothing changed
    sources[0].write_bytes(b"xy")
    os.utime(sources[0], ns=(1, 1))
    forget_stale(root, "source.json")
    assert not folders[0].exists() and folders[1].is_dir() and under_way.is_dir()


def _make_once(path, log):
    with one_maker(path):
        if not os.path.exists(path):
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\n")
            time.sleep(0.3)  # the others arrive while this one makes it
            save_npz(path, {"x": np.arange(3)})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="one_maker locks with fcntl (POSIX)")
def test_processes_that_want_the_same_default_at_once_make_it_once(tmp_path):
    """Test workers, the processes of a run on one machine, a sweep's runs: the first makes it, the others wait and
    read it; a maker killed midway releases the lock, and the next one makes it."""
    fork = multiprocessing.get_context("fork")
    path, log = tmp_path / "default.npz", tmp_path / "makers"
    procs = [fork.Process(target=_make_once, args=(path, log)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0] and len(log.read_text().split()) == 1
    killed, other = tmp_path / "killed.npz", tmp_path / "other"
    stuck = fork.Process(target=_make_once, args=(killed, other))
    stuck.start()
    while not other.exists():  # it holds the lock, making
        time.sleep(0.01)
    os.kill(stuck.pid, signal.SIGKILL)
    stuck.join(30)
    _make_once(killed, other)  # not blocked by the dead maker
    assert len(other.read_text().split()) == 2 and killed.exists()
