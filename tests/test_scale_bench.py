"""benchmarks/scale.py at tiny sizes: a fresh training process per size, stopped at its first step, and a results
file with one finite row per (form, N), shard forms with their conversion's seconds. Its figures are printed, never
asserted on."""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))


@pytest.mark.slow
def test_scale_bench_measures_first_step_and_peak_memory_per_size(tmp_path, capsys):
    import scale
    work = tmp_path / "work"
    rows = scale.main(["--domains", "image", "--forms", "image-folder", "--sizes", "20", "40", "--work", str(work),
                       "--results", str(tmp_path)])
    assert [(r["domain"], r["n"]) for r in rows] == [("image", 20), ("image", 40)]
    for r in rows:
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("seconds", "rss_mib", "rss_ratio")), r
    assert rows[0]["rss_ratio"] == 1 and rows[1]["rss_ratio"] == rows[1]["rss_mib"] / rows[0]["rss_mib"]
    printed = capsys.readouterr().out
    assert f"| image | folder of 16x16 PNGs | 40 | {rows[1]['seconds']:.1f} |" in printed
    text = (tmp_path / "scale.md").read_text()
    assert text.startswith("> **command** `python benchmarks/scale.py --domains image --forms image-folder") \
        and printed.strip() in text
    # the data stays for the next run (complete, marked so); every run's folder and cache are gone
    assert len(list((work / "data" / "image-folder-40" / "images").rglob("*.png"))) == 40
    assert sorted(p.name for p in work.iterdir()) == ["data"]
    # shard forms give their conversion's seconds a column of their own, blank for the others
    row = {"domain": "image", "form": "folder", "n": 20, "seconds": 1.0, "rss_mib": 9.0, "convert_s": None}
    assert scale.table([row, {**row, "form": "shards", "convert_s": 2.5}]).endswith(
        "| 1.0 | 9 | 1.00 |  |\n| image | shards | 20 | 1.0 | 9 | 1.00 | 2.5 |")


def test_scale_bench_generates_each_form_once_at_its_size(tmp_path):
    import datasets
    import numpy as np
    import pandas as pd
    import scale
    from multissl.domains.shards import Shards
    paths = {form: scale.data(tmp_path, form, 30) for form in scale.FORMS}
    assert set(scale.FORMS) == {"image-folder", "image-hf", "image-shards", "audio-folder", "tabular-csv", "text-txt",
                                "text-shards", "rl-npz", "rl-npy", "rl-shards", "video-npy"}
    hf = datasets.load_from_disk(str(paths["image-hf"]))
    assert hf.num_rows == 30 and hf.features["label"].num_classes == scale.CLASSES
    assert hf.cast_column("image", datasets.Image(decode=False))[3]["image"]["bytes"] == \
        (paths["image-folder"] / "c3" / "0000003.png").read_bytes()
    for form, domain in (("image-shards", "image"), ("text-shards", "text"), ("rl-shards", "rl")):
        assert Shards(paths[form], domain).meta["source"] == str(paths[scale.FORMS[form][3]])
        assert scale.written_in(paths[form]) > 0
    assert Shards(paths["image-shards"], "image").count("train") == 30
    assert Shards(paths["text-shards"], "text").count("train") == 30
    buffer = Shards(paths["rl-shards"], "rl")  # items are blocks of steps
    assert buffer.count("train") == 1 and buffer.info["steps"] == 30
    assert len(pd.read_csv(paths["tabular-csv"])) == 30 and len(paths["text-txt"].read_text().splitlines()) == 30
    assert len(np.load(paths["rl-npz"])["obs"]) == 30 == len(np.load(paths["rl-npy"] / "obs.npy", mmap_mode="r"))
    assert np.load(paths["video-npy"], mmap_mode="r").shape == (30, 8, 16, 16)
    assert len(list(paths["audio-folder"].rglob("*.wav"))) == 30
    stamp = (paths["video-npy"].stat().st_mtime_ns, (paths["video-npy"].parent / ".done").exists())
    assert scale.data(tmp_path, "video-npy", 30) == paths["video-npy"]
    assert (paths["video-npy"].stat().st_mtime_ns, True) == stamp  # generated once, then reused
