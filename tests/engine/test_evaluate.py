import json
import subprocess
import sys

import pytest
import torch

from multissl.evaluate import evaluate_run, linear_probe_accuracy, main


def test_linear_probe_separable_and_chance():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    x = torch.randn(200, 5, generator=g) + 4 * y[:, None].float()
    assert linear_probe_accuracy(x[:100], y[:100], x[100:], y[100:]) == 1.0
    noise = torch.randn(200, 5, generator=g)
    assert linear_probe_accuracy(noise[:100], y[:100], noise[100:], y[100:]) < 0.75


def test_evaluate_finished_run_matches_training_knn(tiny):
    folder = tiny.run("trainer.max_steps=2", "trainer.eval_samples=null")  # the whole split, as evaluate
    out = evaluate_run(folder)
    final = tiny.metrics(folder)[-1]
    assert set(out) >= {"knn_acc", "linear_acc", "rankme", "emb_std"}
    # the exported encoder on the same split gives the number the run logged
    assert abs(out["knn_acc"] - final["knn_acc"]) < 1e-6
    cli = subprocess.run([sys.executable, "-m", "multissl.evaluate", str(folder)], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr  # the real entry point, once
    assert json.loads(cli.stdout)["knn_acc"] == out["knn_acc"]


def test_evaluate_of_a_folder_without_an_encoder_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "not an exported encoder" in err


def test_evaluate_gives_the_runs_spectral_and_branch_diagnostics_from_its_checkpoint(tiny):
    folder = tiny.run("objective=byol", "trainer.max_steps=2", "trainer.eval_samples=null")
    out, final = evaluate_run(folder), tiny.metrics(folder)[-1]
    keys = ["erank", "erank_proj", "rankme_proj", "duality/l_c", "duality/l_nc", "duality/l_c_dims",
            "duality/l_nc_dims", "rdm/erank_online", "rdm/erank_target", "rdm/diff"]
    for k in keys:  # the objective's heads and teacher come back from the checkpoint as the run left them
        assert out[k] == pytest.approx(final[k], rel=1e-4, abs=1e-4), k
    encoder_only = evaluate_run(folder / "encoder")  # no checkpoint beside it: the representation's alone
    assert "erank" in encoder_only and "duality/l_c" in encoder_only
    assert not any(k.startswith("rdm/") or k.endswith("_proj") for k in encoder_only)
