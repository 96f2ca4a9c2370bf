"""The benchmarks run (on CPU, a few steps, small realistic sets): the GPU check's smoke test, and the
throughput bench's row, whose figures are printed, never asserted on."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

SMALL = ["--steps", "1", "--scale", "0.03", "data.batch_size=8", "data.num_workers=0"]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_and_reports_finite_losses(tmp_path, capsys):
    import gpu_check
    assert gpu_check.main(["--device", "cpu", "--domains", "image,rl,text,video", "--objectives", "simclr",
                           "--results", str(tmp_path), *SMALL]) == 0
    out = capsys.readouterr().out
    assert written(tmp_path / "gpu-check.md", "python benchmarks/gpu_check.py --device cpu")
    assert "none (CPU)" in out and out.count("| True |") == 4
    assert "| rl | simclr | nature_cnn |" in out  # frames get the convolutional encoder by default


@pytest.mark.slow
def test_throughput_bench_measures_every_part(tmp_path, capsys):
    import throughput
    rows = throughput.main(["--domains", "image", "--sizes", "real", "--objectives", "mae", "--results", str(tmp_path),
                            *SMALL])
    assert written(tmp_path / "throughput-real.md", "python benchmarks/throughput.py --domains image")
    row = rows[0]
    for key in ("data_ms", "model_ms", "full_ms", "data_share", "host_samples_per_s_core", "framework_vs_bare",
                "mae_drop_speedup"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["batch"] == 8 and "| image | real | mae |" in capsys.readouterr().out


def written(path, command: str) -> bool:
    """A results file the benchmark wrote: its provenance line names the command that ran, then a table follows."""
    text = path.read_text()
    return text.startswith(f"> **command** `{command}") and "**commit** " in text and "\n| " in text


TINY_RUN = ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "data.batch_size=16", "data.num_workers=0",
            "trainer.eval_samples=64"]


@pytest.mark.slow
def test_duality_and_rdm_benchmarks_pair_every_arm_with_the_untrained_encoder_and_judge_their_claims(tmp_path, capsys):
    import duality
    import rdm
    common = ["--domains", "image", "--seeds", "0", "--steps", "2", "--eval-every", "1", *TINY_RUN]
    results = duality.main(["--arms", "vicreg,vicreg_exp,vicreg_ctr,simclr,simclr_tuned", "--out",
                            str(tmp_path / "duality"), "--results", str(tmp_path), *common])
    assert written(tmp_path / "duality-image.md", "python benchmarks/duality.py --arms")
    assert {a for _, a, _ in results} == {"untrained", "vicreg", "vicreg_exp", "vicreg_ctr", "simclr", "simclr_tuned"}
    printed = capsys.readouterr().out
    assert "| vicreg_ctr |" in printed and "duality/l_c" in printed
    assert all(f"{c} " in printed for c in ("C1", "C2", "C4 (simclr)", "C4 (vicreg)"))  # judged, whichever way
    results = rdm.main(["--arms", "simsiam,symmetric,rdm_simsiam-poly2,rdm_simsiam-white", "--out",
                        str(tmp_path / "rdm"), "--results", str(tmp_path), *common])
    assert written(tmp_path / "rdm-image.md", "python benchmarks/rdm.py --arms")
    printed = capsys.readouterr().out
    assert "| symmetric |" in printed and all(f"{c} " in printed for c in (
        "R1", "R2", "R3 (rdm_simsiam-poly2)", "after the fact, (rdm_simsiam-white)"))
    rows = results[("image", "simsiam", 0)]
    assert [r["step"] for r in rows if "rdm/diff" in r] == [1, 2]  # the rank difference along training
    assert str(tmp_path / "rdm" / "image" / "report-asymmetric") in printed
    for folder in (tmp_path / "duality" / "image" / "report-objectives",
                   tmp_path / "rdm" / "image" / "report-asymmetric"):
        want = {"loss.png", "ranks.png", "duality.png", "spectrum.png", "index.html"}
        assert want <= {f.name for f in folder.iterdir()}


@pytest.mark.slow
def test_table_suite_pairs_each_arm_with_the_untrained_encoder_on_held_out_rows(tmp_path, capsys):
    import tables
    results = tables.main(["--tables", "credit", "--seeds", "0", "--steps", "2", "--out", str(tmp_path), "--results",
                           str(tmp_path), *TINY_RUN])
    assert written(tmp_path / "tables-credit.md", "python benchmarks/tables.py --tables credit")
    assert set(results) == {("credit", "simclr", 0)}
    for side in ("trained", "untrained"):  # each arm against its own untrained encoder
        assert set(results[("credit", "simclr", 0)][side]) == {(p, f) for p in ("linear", "gbdt") for f in tables.FRACTIONS}
    assert (tmp_path / "credit" / "simclr-s0-untrained" / "encoder").is_dir()
    printed = capsys.readouterr().out
    assert "## credit" in printed and "simclr: linear 10%, mean gain" in printed and "T1 " in printed
    raw_row = next(line for line in printed.splitlines() if line.startswith("| raw |")).split("|")[2:-1]
    assert len(raw_row) == 6 and all(0.5 < float(c) <= 1 for c in raw_row)  # the raw columns' probes score well
    assert "simclr: linear 10%, above raw on " in printed
    # one fixed split, stratified by class, whose held-out rows the pretraining never read
    _, tr, te, classification = tables.prepare("credit", tmp_path)
    assert classification and len(te) == pytest.approx(0.2 * (len(tr) + len(te)), abs=2)
    share = lambda df: (df["Status"] == "bad").mean()  # noqa: E731
    assert share(tr) == pytest.approx(share(te), abs=2 / len(te))
    assert len(tr) + len(te) == 4454 and "rownames" not in tr.columns  # every row once; the row id left out
    # completed later: the recorded runs and raw scores are read, not run again, and the results file says so
    again = tables.main(["--tables", "credit", "--seeds", "0", "--steps", "2", "--out", str(tmp_path / "later"),
                         "--results", str(tmp_path / "later"), "--earlier", str(tmp_path / "tables-credit.json"),
                         *TINY_RUN])
    assert again == results and not (tmp_path / "later" / "credit").exists()
    written_later = (tmp_path / "later" / "tables-credit.md").read_text()
    assert "Earlier runs: seed(s) 0 read from tables-credit.json" in written_later


@pytest.mark.slow
def test_fast_encoders_pair_each_encoder_with_its_untrained_one_and_the_raw_input(tmp_path, capsys):
    import fast_encoders
    results = fast_encoders.main(["--domains", "image", "--seeds", "0", "--steps", "2", "--eval-every", "0", "--out",
                                  str(tmp_path), "--results", str(tmp_path), "data.batch_size=8",
                                  "trainer.eval_samples=64", "data.num_workers=0"])
    assert {a for _, a, _ in results} == {"untrained", "transformer", "convnet"}
    out = capsys.readouterr().out
    assert "| convnet |" in out and "(a) convnet:" in out and "(c) convnet - raw input:" in out
    written = (tmp_path / "fast-encoders-image.md").read_text()
    assert "raw/knn_acc" in written and "**commit**" in written


def test_each_arm_is_paired_with_the_untrained_encoder_it_trained():
    """An objective that refuses the domain's choice of encoder (token objectives on frames) trains another one: its
    gain is over its own run's untrained encoder, not the untrained arm's."""
    import paired
    end = lambda acc, untrained=None: [{"step": 0, "knn_acc": acc, **({} if untrained is None else  # noqa: E731
                                                                       {"untrained/knn_acc": untrained})}]
    results = {("image", "untrained", 0): end(0.5, 0.5), ("image", "conv", 0): end(0.7, 0.5),
               ("image", "tokens", 0): end(0.4, 0.3), ("image", "unlogged", 0): end(0.6)}
    gains = {row.split(" | ")[0][2:]: row.split(" | ")[2] for row in paired.table(results, "image", [])[2:]}
    assert gains == {"untrained": "+0.000 ± 0.000", "conv": "+0.200 ± 0.000", "tokens": "+0.100 ± 0.000",
                     "unlogged": "+0.100 ± 0.000"}


def test_label_draws_are_fixed_and_keep_every_class():
    import tables
    y = np.array([0] * 990 + [1] * 10)
    draws = tables.label_draws(y, 0.01, 5, classification=True)
    again = tables.label_draws(y, 0.01, 5, classification=True)
    assert len(draws) == 5 and all((a == b).all() for a, b in zip(draws, again))  # the same for every arm
    assert all((y[d] == 1).sum() >= 2 and len(set(d)) == len(d) for d in draws)
    assert [len(d) for d in tables.label_draws(y, 1.0, 1, classification=True)] == [1000]


def test_table_scores_are_accuracy_for_classes_and_r2_for_numbers():
    import tables
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(2000, 4))
    y_reg = emb @ np.array([1.0, -2.0, 0.5, 0.0])
    out = tables.scores(emb[:1500], y_reg[:1500], emb[1500:], y_reg[1500:], classification=False)
    assert out[("linear", 1.0)] == pytest.approx(1.0, abs=1e-3)  # a linear target: R^2 of the ridge probe is 1
    y_cls = (y_reg > 0).astype(int)
    out = tables.scores(emb[:1500], y_cls[:1500], emb[1500:], y_cls[1500:], classification=True)
    assert 0.95 < out[("linear", 1.0)] <= 1.0 and out[("linear", 0.01)] > 0.7


@pytest.mark.slow
def test_buffer_suite_holds_out_whole_episodes_and_pairs_each_arm(tmp_path, capsys):
    import buffers
    results = buffers.main(["--buffers", "mountaincar", "--seeds", "0", "--arms", "byol", "--steps", "2",
                            "--collect-steps", "400", "--out", str(tmp_path), "--results", str(tmp_path),
                            "data.batch_size=16", "data.num_workers=0"])
    assert set(results) == {("mountaincar", "byol", 0)}
    assert written(tmp_path / "buffers-mountaincar.md", "python benchmarks/buffers.py --buffers mountaincar")
    assert set(results[("mountaincar", "byol", 0)]["untrained"]) == set(buffers.FRACTIONS)
    printed = capsys.readouterr().out
    assert "## mountaincar" in printed and "byol: R² 10% steps, mean gain" in printed and "B1 " in printed
    assert "| pixels |" in printed and "byol: R² 10% steps, above pixels on " in printed
    _, tr, te = buffers.prepare("mountaincar", tmp_path, 400)
    assert len(tr["obs"]) + len(te["obs"]) == 400 and len(te["obs"]) > 0
    assert not set(tr["episode"]) & set(te["episode"])  # whole episodes held out
    assert tr["obs"].shape[1:] == (2, 48, 72, 3) and "state" in te
    again = buffers.main(["--buffers", "mountaincar", "--seeds", "0", "--arms", "byol", "--steps", "2",
                          "--out", str(tmp_path / "later"), "--results", str(tmp_path / "later"),
                          "--earlier", str(tmp_path / "buffers-mountaincar.json")])
    assert again == results and not (tmp_path / "later" / "mountaincar").exists()  # nothing collected or trained


@pytest.mark.slow
def test_photos_benchmark_trains_on_phone_sized_jpegs_and_prints_peak_memory(tmp_path, monkeypatch, capsys):
    import photos
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "cache"))
    out_file = tmp_path / "photos.md"
    assert photos.main(["--n", "3", "--steps", "1", "--out", str(out_file), "--", *TINY_RUN[:3],
                        "trainer.baseline=false"]) == 0
    out = capsys.readouterr().out
    assert "domain.image_size=224 (their median shorter side, 3000 px, capped at 224)" in out
    assert "| 3 x 4000 x 3000 JPEG | 1 |" in out and "GiB" in out
    written = out_file.read_text()  # a results file: the command that measured it first, then the table
    assert written.startswith("> **command** `python benchmarks/photos.py --n 3") and "| 3 x 4000 x 3000 JPEG | 1 |" \
        in written


@pytest.mark.slow
def test_shards_benchmark_trains_from_the_folder_its_shards_and_a_local_s3_with_the_same_figures(tmp_path, capsys):
    import shards
    rows = shards.main(["--steps", "1", "--samples", "48", "--work", str(tmp_path / "work"), "--results",
                        str(tmp_path), "--", *TINY_RUN, "trainer.log_every=1"])
    assert [r["source"] for r in rows] == ["folder of PNGs", "shards on disk", "shards in S3 (local server)"]
    assert all(r[k] == rows[0][k] for r in rows for k in ("loss", "knn_acc", "probe_test_acc"))
    assert "The same figures from every source: yes." in capsys.readouterr().out
    assert (tmp_path / "shards.md").read_text().startswith("> **command** `python benchmarks/shards.py --steps 1")


@pytest.mark.slow
def test_encoders_bench_gives_parameters_memory_per_sample_and_step_time(tmp_path, monkeypatch, capsys):
    import encoders
    monkeypatch.setenv("MULTISSL_CACHE", str(tmp_path / "cache"))
    rows = encoders.main(["--presets", "transformer", "--batch", "2", "--steps", "1", "--results", str(tmp_path)])
    assert [r["preset"] for r in rows] == ["transformer"] and rows[0]["finite"]
    assert rows[0]["params"] > 0 and rows[0]["ms"] > 0 and rows[0]["rss_mib"] > 0 and math.isfinite(rows[0]["mib_per_sample"])
    assert "| transformer |" in capsys.readouterr().out
    assert (tmp_path / "encoders.md").read_text().startswith("> **command** `python benchmarks/encoders.py --presets")


def test_a_suite_run_stopped_after_its_export_is_evaluated_again_not_read_without_scores(tmp_path, monkeypatch):
    """A run is read back only once its final evaluation is logged: one stopped between the export and that
    evaluation (the last thing a run does) trains again, that is resumes and evaluates."""
    import multissl.train
    import paired
    folder = tmp_path / "run"
    (folder / "encoder").mkdir(parents=True)
    (folder / "encoder" / "config.json").write_text("{}")
    (folder / "encoder" / "model.safetensors").write_bytes(b"")
    rows = ['{"step": 500, "loss": 1.0}']
    (folder / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    launched = []

    def run(cfg):  # the resumed run: nothing left to train, then the final evaluation
        launched.append(cfg.trainer.max_steps)
        (folder / "metrics.jsonl").write_text("\n".join([*rows, '{"step": 500, "knn_acc": 0.9}']) + "\n")

    monkeypatch.setattr(multissl.train, "run", run)
    out = paired.train(folder, "image", (), 0, 500, 0, [], 0)
    assert launched == [500] and out[-1] == {"step": 500, "knn_acc": 0.9}
    assert paired.train(folder, "image", (), 0, 500, 0, [], 0) == out and launched == [500]  # now read, not run
