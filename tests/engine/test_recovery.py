"""Recovery from the crashes a run folder exists for: a torn last line of metrics.jsonl is dropped and said (resume,
report); the final checkpoint and the export are written before the final evaluation; the export is written to a
temporary folder and renamed; a full disk (a small RLIMIT_FSIZE stands in) during a checkpoint or an export is one
line naming the folder, leaves no temporary file and keeps what was there; a run.dir reused with other choices is
one line naming both."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from omegaconf import OmegaConf

import multissl
from multissl import checkpoint, monitor
from multissl.errors import UserError
from multissl.report import report
from multissl.train import run


def lines(folder):
    return (folder / "metrics.jsonl").read_text().splitlines()


def test_a_torn_last_line_is_dropped_and_said_on_resume_and_in_report(tiny, capsys):
    folder = tiny.run("trainer.max_steps=2", "trainer.checkpoint_every=1")
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 1.2')  # the crash tore the row being written
    report([folder], tiny.root / "report")
    assert "dropped 1 line(s) that are not whole rows (line 4" in capsys.readouterr().err
    run(tiny.config("trainer.max_steps=3", "trainer.checkpoint_every=1"))  # relaunch: resumes from step 2
    err = capsys.readouterr().err
    assert "dropped 1 line(s)" in err and "resuming" in err
    rows = [json.loads(x) for x in lines(folder)]  # every line whole again
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]


def test_a_fresh_run_starts_its_metrics_empty(tiny):
    folder = tiny.root / "run"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"step": 7, "loss": 9.0}\n')  # a run that died before its checkpoint
    tiny.run("trainer.max_steps=1")
    assert [json.loads(x)["step"] for x in lines(folder)] == [1, 1]  # the step and the final evaluation


def test_an_evaluation_that_fails_loses_neither_the_final_checkpoint_nor_the_export(tiny, monkeypatch):
    def fail(*a, **k):
        raise RuntimeError("evaluation failed")
    monkeypatch.setattr(monitor, "evaluate", fail)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        tiny.run("trainer.max_steps=2", "trainer.checkpoint_every=0")
    folder = tiny.root / "run"
    assert checkpoint.latest(folder / "checkpoints").name == "step_00000002.pt"
    assert multissl.load_encoder(folder).dim == 16


def export_args():
    from multissl.domains.image import ImageDomain
    from multissl.encoder import Encoder
    domain = ImageDomain()
    domain.dataset("train")
    enc = Encoder(domain, dim=16, depth=1, heads=2)
    return enc, OmegaConf.create({"_target_": "multissl.domains.image.ImageDomain"}), OmegaConf.create(
        {"_target_": "multissl.encoder.Encoder", "dim": 16, "depth": 1, "heads": 2}), domain.state()


def test_an_export_replaces_the_previous_one_whole(tmp_path):
    from multissl.export import save_encoder
    enc, dcfg, ecfg, state = export_args()
    save_encoder(tmp_path / "encoder", enc, dcfg, ecfg, state)
    (tmp_path / "encoder" / "stale.txt").write_text("from an older export")
    with torch.no_grad():
        enc.norm.weight.fill_(2.0)
    save_encoder(tmp_path / "encoder", enc, dcfg, ecfg, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]  # no temporary or old folder left
    assert sorted(p.name for p in (tmp_path / "encoder").iterdir()) == ["config.json", "model.safetensors"]
    assert torch.all(multissl.load_encoder(tmp_path).encoder.norm.weight == 2.0)


LIMITED = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    exec(sys.argv[1])
""")


def limited(code: str, limit: int, cwd):
    return subprocess.run([sys.executable, "-c", LIMITED, textwrap.dedent(code), str(limit)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_full_disk_during_a_checkpoint_is_one_line_keeps_the_previous_one_and_no_temporary(tmp_path):
    out = limited("""
        import torch
        from multissl import checkpoint
        from multissl.errors import UserError
        checkpoint.save(checkpoint.Path("ck"), 1, {"w": torch.zeros(10)})
        try:
            checkpoint.save(checkpoint.Path("ck"), 2, {"w": torch.zeros(100_000)})
        except UserError as e:
            print(e)
    """, 100_000, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    msg = out.stdout.strip()
    assert len(msg.splitlines()) == 1 and "cannot write checkpoint step_00000002.pt in ck: no space left" in msg
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["step_00000001.pt"]
    assert checkpoint.load(tmp_path / "ck" / "step_00000001.pt")["w"].shape == (10,)


def test_a_full_disk_during_an_export_is_one_line_keeps_the_previous_one_and_no_temporary(tmp_path):
    from multissl.export import save_encoder
    enc, dcfg, ecfg, state = export_args()
    save_encoder(tmp_path / "encoder", enc, dcfg, ecfg, state)
    before = (tmp_path / "encoder" / "model.safetensors").read_bytes()
    out = limited("""
        import sys
        sys.path.insert(0, "{tests}")
        from test_recovery import export_args
        from multissl.errors import UserError
        from multissl.export import save_encoder
        enc, dcfg, ecfg, state = export_args()
        try:
            save_encoder("encoder", enc, dcfg, ecfg, state)
        except UserError as e:
            print(e)
    """.replace("{tests}", os.path.dirname(__file__)), len(before) // 2, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    msg = out.stdout.strip()
    assert len(msg.splitlines()) == 1 and "cannot write the encoder export to encoder: no space left" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]
    assert (tmp_path / "encoder" / "model.safetensors").read_bytes() == before


def test_a_run_on_a_full_disk_exits_2_with_one_line(tmp_path):
    out = limited("""
        import sys
        sys.argv = ["multissl.train", "encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "data.batch_size=32",
                    "trainer.max_steps=1", "trainer.eval_samples=64", "run.dir=run"]
        from multissl.train import main
        main()
    """, 50_000, tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    err = [x for x in out.stderr.splitlines() if x.startswith("multissl: error")]
    assert len(err) == 1 and "no space left" in err[0] and "Traceback" not in out.stderr
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("other", ["objective=byol", "domain=tabular", "encoder=mlp"])
def test_a_run_dir_reused_with_other_choices_is_one_line_naming_both(tiny, other):
    tiny.run("trainer.max_steps=1")
    key, value = other.split("=")
    with pytest.raises(UserError) as e:
        tiny.run("trainer.max_steps=2", other, tiny_encoder=not other.startswith("encoder="))
    assert f"holds a run of {key}=" in str(e.value) and f"not {key}={value}" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_checkpoint_of_another_model_is_one_line(tiny):
    tiny.run("trainer.max_steps=1")
    with pytest.raises(UserError, match=r"the checkpoint in .* does not fit this model .*choose another run.dir"):
        run(tiny.config("trainer.max_steps=2", "encoder.dim=32"))


def test_relaunching_a_finished_run_does_nothing_and_logs_nothing_twice(tiny, capsys):
    folder = tiny.run("trainer.max_steps=2")
    rows = (folder / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert tiny.run("trainer.max_steps=2") == folder
    assert (folder / "metrics.jsonl").read_text() == rows
    assert "finished at step 2 already: nothing to do" in capsys.readouterr().err
    tiny.run("trainer.max_steps=3")  # raising max_steps trains on
    assert [r["step"] for r in tiny.metrics(folder) if "loss" in r][-1] == 3
