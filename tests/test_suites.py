"""The per-domain suites (benchmarks/suites.py, benchmarks/sets/): every generated set, built tiny, is read by its
domain with a held-out split of its own that shares no sample with training; the runner pairs each run's trained
encoder with its untrained one and the obvious baseline, and judges S1 and S2."""
import hashlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import suites  # noqa: E402

from multissl.cli import load_config  # noqa: E402
from multissl.train import build_domain  # noqa: E402

TINY = 0.02
GENERATED = [(d, n) for d in suites.DOMAINS for n, s in suites.sets_of(d).items() if s.same_run_as is None]


def digest(x) -> str:
    """A sample's content: an image, a clip or a waveform tensor, or a text's ids."""
    a = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("domain,name", GENERATED)
def test_every_set_is_read_with_a_held_out_split_of_its_own(domain, name, tmp_path, monkeypatch):
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "cache"))
    s = suites.sets_of(domain)[name]
    overrides = s.prepare(suites.data_root(domain, name, TINY), TINY)
    if not overrides:
        pytest.skip("the domain's embedded default: tested with the domain")
    assert (suites.data_root(domain, name, TINY) / ".done").exists() and s.about
    assert s.prepare(suites.data_root(domain, name, TINY), TINY) == overrides  # written once, then read
    assert not any(o.startswith(("domain.", "encoder", "objective", "optim.")) for o in overrides)  # no recipe
    dom = build_domain(load_config([f"domain={domain}", *overrides, "data.num_workers=0"]))
    train, test = dom.dataset("train"), dom.dataset("test")
    assert test is not None and len(test) >= 2 and len(train) >= len(test)
    labels = {split: [int(ds[i]["y"]) for i in range(len(ds))] for split, ds in (("train", train), ("test", test))}
    assert len(set(labels["train"])) >= 2 and set(labels["test"]) <= set(labels["train"])
    content = lambda ds: {digest(dom.eval_input(ds[i]["x"])) for i in range(len(ds))}  # noqa: E731
    assert not content(train) & content(test)  # no held-out sample is also a training sample


@pytest.mark.slow
def test_suite_pairs_each_run_with_its_untrained_encoder_and_the_obvious_baseline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "cache"))
    name = "shapes"  # generated, tiny
    results = suites.main(["--domain", "image", "--sets", name, "--seeds", "0,1", "--steps", "2", "--scale", str(TINY),
                           "--out", str(tmp_path / "runs"), "--results", str(tmp_path), "encoder.dim=16",
                           "encoder.depth=1", "encoder.heads=2", "data.batch_size=16", "data.num_workers=0"])
    assert set(results) == {(name, "default", 0), (name, "default", 1)}
    for scores in results.values():
        assert set(scores) == {"trained", "untrained", "raw"} and all(math.isfinite(v) for v in scores.values())
    assert results[(name, "default", 0)]["raw"] == results[(name, "default", 1)]["raw"]  # the raw input has no seed
    printed = capsys.readouterr().out
    assert f"| {name} | default | knn_acc |" in printed
    assert "default: S1 mean gain over untrained" in printed and "default: S2 above the obvious baseline on " in printed
    text = (tmp_path / f"suite-image-{name}.md").read_text()
    assert text.startswith("> **command** `python benchmarks/suites.py --domain image") and "**commit** " in text
    # a suite completed later: the recorded runs are read, not trained again, and the results file says so
    recorded = tmp_path / f"suite-image-{name}.json"
    again = suites.main(["--domain", "image", "--sets", name, "--seeds", "0,1,2", "--steps", "2", "--scale", str(TINY),
                         "--out", str(tmp_path / "later"), "--results", str(tmp_path / "later"), "--earlier",
                         str(recorded), "encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "data.batch_size=16",
                         "data.num_workers=0"])
    assert {k: again[k] for k in results} == results and set(again) == {*results, (name, "default", 2)}
    runs = tmp_path / "later" / "image" / name
    assert (runs / "default-s2").is_dir() and not (runs / "default-s0").exists()
    written = (tmp_path / "later" / recorded.with_suffix(".md").name).read_text()
    assert f"Earlier runs: seed(s) 0, 1 read from {recorded.name}" in written


def test_an_arm_is_the_default_recipe_changed_or_an_objective():
    assert suites.overrides_of("default") == ()
    assert suites.overrides_of("default+encoder=convnet+domain.flip=0.5") == ("encoder=convnet", "domain.flip=0.5")
    assert suites.overrides_of("byol+domain.flip=0") == ("objective=byol", "domain.flip=0")


@pytest.mark.slow
def test_distill_benchmark_pairs_the_distilled_student_with_its_own_run_and_judges_against_the_teacher(
        tmp_path, monkeypatch, capsys):
    import distill
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "cache"))
    tiny = ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "data.batch_size=16", "data.num_workers=0",
            "trainer.eval_samples=64"]
    distill.main(["--domains", "image", "--seeds", "0,1", "--steps", "2", "--teacher-steps", "3", "--scale",
                  str(TINY), "--out", str(tmp_path / "runs"), "--results", str(tmp_path), *tiny])
    printed = capsys.readouterr().out
    assert "| image (digits) | encoder.dim=128 encoder.depth=6 encoder.heads=8, 3 steps: " in printed
    assert "image: D1 distilled " in printed and "image: D2 above the student's own SSL on " in printed
    assert "its projection to the teacher's space" in printed
    runs = tmp_path / "runs" / "image" / "digits"
    teacher = runs / "default_encoder.dim_128_encoder.depth_6_encoder.heads_8-s0"
    students = sorted(p.name for p in runs.glob("distill_objective.teacher_*"))
    assert (teacher / "encoder" / "model.safetensors").is_file() and len(students) == 2  # seeds 0 and 1
    assert (tmp_path / "distill.md").read_text().startswith("> **command** `python benchmarks/distill.py")
