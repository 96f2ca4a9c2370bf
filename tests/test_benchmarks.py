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
