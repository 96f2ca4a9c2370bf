"""The benchmarks run (on CPU, a few steps, small realistic sets): the GPU check's smoke test, and the
throughput bench's row, whose figures are printed, never asserted on."""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

SMALL = ["--steps", "1", "--scale", "0.03", "data.batch_size=8", "data.num_workers=0"]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_and_reports_finite_losses(capsys):
    import gpu_check
    assert gpu_check.main(["--device", "cpu", "--domains", "image,rl", "--objectives", "simclr", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "none (CPU)" in out and out.count("| True |") == 2
    assert "| rl | simclr | nature_cnn |" in out  # frames get the convolutional encoder by default


@pytest.mark.slow
def test_throughput_bench_measures_every_part(capsys):
    import throughput
    rows = throughput.main(["--domains", "image", "--sizes", "real", "--objectives", "mae", *SMALL])
    row = rows[0]
    for key in ("data_ms", "model_ms", "full_ms", "data_share", "host_samples_per_s_core", "framework_vs_bare",
                "mae_drop_speedup"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["batch"] == 8 and "| image | real | mae |" in capsys.readouterr().out


TINY_RUN = ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "data.batch_size=16", "data.num_workers=0",
            "trainer.eval_samples=64"]


@pytest.mark.slow
def test_duality_and_rdm_benchmarks_pair_every_arm_with_the_untrained_encoder_and_judge_their_claims(tmp_path, capsys):
    import duality
    import rdm
    common = ["--domains", "image", "--seeds", "0", "--steps", "2", "--eval-every", "1", *TINY_RUN]
    results = duality.main(["--arms", "vicreg,vicreg_exp,vicreg_ctr,simclr,simclr_tuned", "--out",
                            str(tmp_path / "duality"), *common])
    assert {a for _, a, _ in results} == {"untrained", "vicreg", "vicreg_exp", "vicreg_ctr", "simclr", "simclr_tuned"}
    printed = capsys.readouterr().out
    assert "| vicreg_ctr |" in printed and "duality/l_c" in printed
    assert all(f"{c} " in printed for c in ("C1", "C2", "C4 (simclr)", "C4 (vicreg)"))  # judged, whichever way
    results = rdm.main(["--arms", "simsiam,symmetric,rdm_simsiam-poly2,rdm_simsiam-white", "--out",
                        str(tmp_path / "rdm"), *common])
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
