import numpy as np
import pytest

from multissl.domains import espeak as E


def test_synthesize_a_digit():
    x = E.synthesize("seven", "en-us", 170, 50)
    assert x.dtype == np.float32 and x.ndim == 1
    assert 0.15 < len(x) / E.NATIVE_RATE < 1.5
    assert 0.05 < np.abs(x).max() <= 1


def test_speakers_sound_different_and_synthesis_is_deterministic():
    base = E.synthesize("three", "en-us+m3", 170, 50)
    for other in [("en-us+f1", 170, 50), ("en-gb-scotland+m3", 170, 50), ("en-us+m3", 120, 50),
                  ("en-us+m3", 170, 80)]:
        y = E.synthesize("three", *other)
        assert len(y) != len(base) or not np.array_equal(y, base), other
    # espeak keeps hidden state between utterances; the same call must still give the same audio
    E.synthesize("hello there", "en-029+grandma", 200, 30)
    assert np.array_equal(E.synthesize("three", "en-us+m3", 170, 50), base)


def test_unknown_voice_is_a_clear_error():
    with pytest.raises(ValueError, match="no voice 'xx-nowhere'"):
        E.synthesize("one", "xx-nowhere", 170, 50)
    with pytest.raises(ValueError, match="no voice variant 'nosuchvariant'"):
        E.synthesize("one", "en-us+nosuchvariant", 170, 50)


def test_speakers():
    s = E.speakers()
    assert s == E.speakers() and 50 <= len(s) <= 80
    assert len({x["voice"] for x in s}) == len(s)  # every speaker is its own accent+variant combination
    assert 0.15 <= np.mean([x["test"] for x in s]) <= 0.25
    variant = lambda x: x["voice"].partition("+")[2]
    assert not {variant(x) for x in s if x["test"]} & {variant(x) for x in s if not x["test"]}
    assert {x["voice"].partition("+")[0] for x in s if x["test"]} <= {x["voice"].partition("+")[0] for x in s}
    assert all(120 <= x["rate"] <= 220 and 25 <= x["pitch"] <= 80 for x in s)
    assert all((E._data_path() / "voices" / "!v" / variant(x)).is_file() for x in s)


def test_spoken_words_generates_caches_and_recovers(tmp_path, monkeypatch):
    few = [{"voice": "en-us+m1", "rate": 150, "pitch": 40, "test": False},
           {"voice": "en-gb-x-rp+f1", "rate": 200, "pitch": 70, "test": False},
           {"voice": "en-029+m4", "rate": 130, "pitch": 55, "test": True}]
    monkeypatch.setattr(E, "speakers", lambda: few)
    cache = tmp_path / "new" / "dir"
    d = E.spoken_words(cache, sample_rate=8000, seconds=1.0)
    n = 3 * len(E.WORDS)
    assert d["wave"].shape == (n, 8000) and d["wave"].dtype == np.int16
    assert d["word"].dtype == np.int64 and d["speaker"].dtype == np.int64 and d["test"].dtype == bool
    pairs = set(zip(d["speaker"].tolist(), d["word"].tolist()))
    assert len(pairs) == n and pairs == {(s, w) for s in range(3) for w in range(len(E.WORDS))}
    assert np.array_equal(d["test"], d["speaker"] == 2)
    assert (np.abs(d["wave"]).max(1) > 1000).all()
    for row in d["wave"][::7]:  # trimmed and centred: equal silence either side
        loud = np.flatnonzero(row)
        assert loud[0] > 0 and abs(loud[0] - (len(row) - 1 - loud[-1])) <= 3
    [file] = cache.glob("*.npz")
    assert not list(cache.glob("*.tmp"))

    def no_synthesis(*a):
        raise AssertionError("cache not used")
    with monkeypatch.context() as m:
        m.setattr(E, "synthesize", no_synthesis)
        again = E.spoken_words(cache, sample_rate=8000, seconds=1.0)
    assert all(np.array_equal(d[k], again[k]) for k in d)

    file.write_bytes(file.read_bytes()[:1000])  # a truncated (killed) write
    regenerated = E.spoken_words(cache, sample_rate=8000, seconds=1.0)
    assert all(np.array_equal(d[k], regenerated[k]) for k in d)
    with np.load(file) as z:
        assert np.array_equal(z["wave"], d["wave"])

    monkeypatch.setattr(E, "speakers", lambda: few[:2])  # another speaker list is another cache file
    assert len(E.spoken_words(cache, sample_rate=8000, seconds=1.0)["word"]) == 2 * len(E.WORDS)
    assert len(list(cache.glob("*.npz"))) == 2
