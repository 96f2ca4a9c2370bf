"""The cache root for generated default data, and its atomic writer."""
import numpy as np

from multissl.domains.cache import default_cache_dir, save_npz


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "m"))
    assert default_cache_dir() == tmp_path / "m"
    monkeypatch.delenv("MULTISSL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "multissl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert default_cache_dir() == tmp_path / "h" / ".cache" / "multissl"


def test_save_npz_is_atomic_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.npz"
    save_npz(path, {"x": np.arange(3)})
    save_npz(path, {"x": np.arange(4)})  # replaces the file whole
    with np.load(path) as z:
        assert z["x"].tolist() == [0, 1, 2, 3]
    assert [p.name for p in path.parent.iterdir()] == ["a.npz"]
