"""Sweeps (`python -m multissl.train -m …`): Hydra's expansion of the command, every combination checked before any
run, a tiny real sweep (its folders, summary over seeds, report and resume), failing runs, a launcher plugin through
Hydra's Plugins API, and the command itself."""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from threadpoolctl import threadpool_limits

from multissl import sweep
from multissl.report import labels, report
from multissl.runlog import read_rows
from tiny import TINY, TINY_ENCODER

FAST = (*TINY_ENCODER, *TINY, "trainer.max_steps=2", "trainer.baseline=true")
RUNS = [f"objective={o},trainer.seed={s}" for o in ("simclr", "byol") for s in (0, 1)]


def status(argv) -> int:
    """The sweep's exit status, whether it returns it or the CLI exits with it (a bad override)."""
    try:
        return sweep.main(list(argv))
    except SystemExit as e:
        return e.code


def test_hydra_expands_the_command_into_every_combination_and_names_each_folder():
    task, launcher = sweep.split_hydra(sweep.parse(
        ["objective=simclr,byol", "trainer.seed=range(2)", "data.path='a b,c'", "hydra/launcher=basic"]))
    assert launcher == ["hydra/launcher=basic"]
    keys, combos = sweep.combinations(task)
    assert keys == ["objective", "trainer.seed", "data.path"]
    assert combos == [[f"objective={o}", f"trainer.seed={s}", "data.path='a b,c'"]  # quoted: one value, not a sweep
                      for o in ("simclr", "byol") for s in (0, 1)]
    # choice(…) too, and a module:Class reaches the CLI as typed (Hydra's sweeper escapes the colon)
    assert sweep.combinations(sweep.parse(["objective=choice(simclr,pkg.mod:Obj)"]))[1] == [
        ["objective=simclr"], ["objective=pkg.mod:Obj"]]
    names = sweep.folder_names([{"objective": "byol", "trainer.seed": "1"}, {"data.path": "/x/y z"},
                                {"data.path": "/x/y_z"}, {"data.path": "a" * 300}])
    assert names[0] == "objective=byol,trainer.seed=1"
    assert len(set(names)) == 4 and all("/" not in n and " " not in n and len(n) <= 120 for n in names)
    for text in ("/tmp/a b,c", "it's", "c:\\dir\\"):  # the sweep folder reaches a launcher's config intact
        assert sweep.parse([f"hydra.sweep.dir={sweep.quoted(text)}"])[0].value() == text


@pytest.mark.parametrize("args, says", [
    (["trainer.max_steps=1,oops"], "trainer.max_steps must be int"),  # the second combination is the bad one
    (["objective=simclr,nope"], "unknown objective 'nope'"),
    (["trainer.seed=range(a)"], "cannot read the override 'trainer.seed=range(a)'"),
    (["trainer.seed=interval(0,1)"], "a sweep lists its values"),
    (["objective=simclr,simclr"], "lists objective=simclr twice"),
    (["hydra.sweep.dir=elsewhere"], "the only Hydra settings a sweep takes"),
    (["hydra.launcher.n_jobs=2"], "no launcher is named"),
    (["hydra/launcher=nosuch"], "hydra/launcher=nosuch is not installed (installed: basic"),
    (["hydra/launcher=basic", "hydra.launcher.n_jobs=2"], "hydra/launcher=basic:"),
    (["run.dir=a,b"], "run.dir names the sweep folder"),
    (["trainer.resume=runs/x"], "a sweep resumes by itself"),
])
def test_a_bad_sweep_is_refused_in_one_line_before_any_run(args, says, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("multissl.train.execute", lambda cfg: pytest.fail("a run started"))
    monkeypatch.chdir(tmp_path)
    assert status([*FAST, "objective=simclr,byol", *args, f"run.dir={tmp_path / 'sweep'}"]) == 2
    err = capsys.readouterr().err
    assert "multissl: error:" in err and says in err
    assert sorted(os.listdir(tmp_path)) == []  # no sweep folder, no Hydra outputs


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A real sweep: 2 objectives x 2 seeds, two steps each, with the untrained baseline."""
    folder = tmp_path_factory.mktemp("sweeps") / "sweep"
    argv = [*FAST, "objective=simclr,byol", "trainer.seed=0,1", f"run.dir={folder}"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors (tests/conftest.py: _single_thread, which is per test)
    with threadpool_limits(limits=1):
        assert sweep.main(argv) == 0
    torch.set_num_threads(threads)
    return folder, argv


def final(run: Path) -> dict:
    return [r for r in read_rows(run / "metrics.jsonl") if "knn_acc" in r][-1]


def test_a_sweep_runs_every_combination_in_its_own_folder_and_summarizes_over_seeds(swept):
    folder, _ = swept
    assert {"summary.md", "summary.json", *RUNS} == {p.name for p in folder.iterdir()}
    for name in RUNS:  # each run trained its own combination to the end
        saved = OmegaConf.load(folder / name / "config.yaml")
        assert f"objective={saved.meta.objective},trainer.seed={saved.trainer.seed}" == name
        assert (folder / name / "encoder").is_dir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["failed"] == [] and [r["choices"] for r in summary["rows"]] == [{"objective": "simclr"},
                                                                                  {"objective": "byol"}]
    page = (folder / "summary.md").read_text()
    for row in summary["rows"]:
        finals = [final(folder / f"objective={row['choices']['objective']},trainer.seed={s}") for s in (0, 1)]
        knn, untrained = [f["knn_acc"] for f in finals], [f["untrained/knn_acc"] for f in finals]
        assert (row["metric"], row["higher_is_better"], row["seeds"], row["failed"]) == ("knn_acc", True, 2, 0)
        assert [r["value"] for r in row["runs"]] == knn and [r["untrained"] for r in row["runs"]] == untrained
        assert row["mean"] == pytest.approx(statistics.fmean(knn))
        assert row["sd"] == pytest.approx(statistics.stdev(knn))
        assert row["untrained_mean"] == pytest.approx(statistics.fmean(untrained))
        assert (f"| objective={row['choices']['objective']} | knn_acc ↑ | {row['mean']:.4f} ± {row['sd']:.4f} | "
                f"{row['untrained_mean']:.4f} | 2 | 0 |") in page


def test_the_report_of_a_sweep_folder_overlays_all_its_runs(swept):
    folder, _ = swept
    out = report([folder])
    assert out == folder / "report"
    assert f"<p>{', '.join(sorted(RUNS))}</p>" in (out / "index.html").read_text()
    assert (out / "spectrum.png").is_file()  # every run has its export
    # runs of two sweeps that share a name keep apart in the plots
    assert labels([Path("a/x"), Path("b/x"), Path("a/y")]) == ["a/x", "b/x", "y"]


def test_relaunching_a_sweep_skips_finished_runs_and_resumes_the_others(swept, capsys):
    folder, argv = swept
    log = folder / "objective=byol,trainer.seed=1" / "metrics.jsonl"
    whole = final(log.parent)
    log.write_text("".join(f"{line}\n" for line in log.read_text().splitlines()[:-1]))  # stopped before the end
    others = {p: p.read_text() for p in folder.glob("*/metrics.jsonl") if p != log}
    assert sweep.main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("finished earlier, skipped") == 3 and f"resuming {log.parent} from step 2" in err
    assert {p: p.read_text() for p in others} == others
    assert final(log.parent)["knn_acc"] == pytest.approx(whole["knn_acc"])
    assert json.loads((folder / "summary.json").read_text())["rows"][1]["seeds"] == 2


def test_a_failing_run_is_marked_the_others_still_run_and_the_sweep_exits_non_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no run.dir: the sweep folder is runs/sweep-<time>
    assert sweep.main([*FAST, f"data.path={tmp_path}/missing1,{tmp_path}/missing2"]) == 1
    err = capsys.readouterr().err
    assert "run 2/2" in err and err.count("does not exist") == 2  # the second ran after the first failed
    [folder] = (tmp_path / "runs").glob("sweep-*")
    summary = json.loads((folder / "summary.json").read_text())
    assert len(summary["failed"]) == 2
    assert all(r["runs"][0]["status"] == "failed" and r["runs"][0]["exit"] == 2 for r in summary["rows"])
    assert "Failed (" in (folder / "summary.md").read_text()


def fake_execute(seen: list, composed: list):
    """A stand-in for multissl.train.execute: objective=simclr ends with status 3, objective=byol raises."""
    def execute(cfg):
        seen.append((cfg.run.dir, cfg.meta.objective, os.getcwd()))
        composed.append(cfg)
        if cfg.meta.objective == "byol":
            raise RuntimeError("boom")
        return 3
    return execute


@pytest.mark.parametrize("launcher", [None, "hydra/launcher=basic"])
def test_each_run_gets_its_composed_config_and_a_crash_is_that_runs_failure(launcher, tmp_path, tmp_path_factory,
                                                                            monkeypatch, capsys):
    """One after another here, or through Hydra's own basic launcher (the Plugins API): each run gets the config
    composed for its folder (with the command's --config-dir); one that raises is marked failed like one that
    returns an error status. A launcher leaves no Hydra outputs: no .hydra/, job log or change of working folder."""
    seen, composed = [], []
    monkeypatch.setattr("multissl.train.execute", fake_execute(seen, composed))
    monkeypatch.setattr("multissl.plugins._dirs", [])  # the folders --config-dir adds, for this test only
    monkeypatch.chdir(tmp_path)
    folder, configs = tmp_path / "sweep", str(tmp_path_factory.mktemp("configs"))
    argv = ["--config-dir", configs, *FAST, "objective=simclr,byol", *([launcher] if launcher else [])]
    assert sweep.main([*argv, f"run.dir={folder}"]) == 1
    assert seen == [(str(folder / f"objective={o}"), o, str(tmp_path)) for o in ("simclr", "byol")]
    assert all(cfg.meta.overrides[:2] == ["--config-dir", configs] for cfg in composed)
    err = capsys.readouterr().err
    assert ("objective=byol: boom" if launcher else "RuntimeError: boom") in err
    runs = [r for row in json.loads((folder / "summary.json").read_text())["rows"] for r in row["runs"]]
    assert [(r["status"], r["exit"]) for r in runs] == [("failed", 3), ("failed", 1)]
    assert sorted(os.listdir(tmp_path)) == ["sweep"]
    made = ["objective=byol", "objective=simclr"] if launcher else []  # Hydra's job makes its folder, empty here
    assert sorted(os.listdir(folder)) == [*made, "summary.json", "summary.md"]
    assert all(not os.listdir(folder / f) for f in made)


def test_a_stop_signal_ends_the_sweep_with_the_summary_of_what_ran(tmp_path, monkeypatch):
    def stopped(cfg):
        return 143  # what a run returns on SIGTERM, after saving its checkpoint (128 + 15)

    monkeypatch.setattr("multissl.train.execute", stopped)
    with pytest.raises(SystemExit) as e:
        sweep.main([*FAST, "objective=simclr,byol", f"run.dir={tmp_path}"])
    assert e.value.code == 143
    runs = [r for row in json.loads((tmp_path / "summary.json").read_text())["rows"] for r in row["runs"]]
    assert [(r["status"], r["exit"]) for r in runs] == [("stopped", 143), ("not run", None)]


def test_only_the_main_process_speaks_and_writes_the_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("multissl.train.execute", lambda cfg: 0)
    monkeypatch.setenv("RANK", "1")  # another process of `accelerate launch`
    assert sweep.main([*FAST, "objective=simclr,byol", f"run.dir={tmp_path}"]) == 0
    assert not os.listdir(tmp_path) and "multissl: sweep:" not in capsys.readouterr().err


def test_the_summary_table_escapes_its_separator_and_names_the_failed_runs():
    run = {"name": "n", "status": "failed", "exit": 2}
    page = sweep.markdown({"sweep": "s", "command": "c", "rows": [
        {"choices": {"data.path": "a|b"}, "metric": None, "higher_is_better": None, "mean": None, "sd": None,
         "untrained_mean": None, "seeds": 0, "failed": 1, "runs": [run]},
        {"choices": {}, "metric": "state_r2_mean", "higher_is_better": True, "mean": 0.5, "sd": None,
         "untrained_mean": None, "seeds": 1, "failed": 0, "runs": []}]})
    assert "| data.path=a\\|b | — | — | — | 0 | 1 |" in page
    assert "| (every run) | state_r2_mean ↑ | 0.5000 | — | 1 | 0 |" in page
    assert "relaunch the same command to retry them): n (exit 2)." in page


def test_help_prints_the_usage(capsys):
    assert status(["--help"]) == 0 and "-m runs every combination" in capsys.readouterr().out


def test_the_summary_takes_each_domains_headline_metric(tmp_path, monkeypatch):
    """The default (kNN accuracy), a domain class's own (RL), or the one a domain decides from its data (tables, a
    property) as the run's export rebuilds the domain."""
    def job(target):
        return sweep.Job({}, [], tmp_path, OmegaConf.create({"domain": {"_target_": target}}))

    exported = SimpleNamespace(domain=SimpleNamespace(headline=("probe_linear", False, False)))
    monkeypatch.setattr("multissl.export.load_encoder", {tmp_path: exported}.get)
    assert sweep.headline(job("multissl.domains.image.ImageDomain")) == ("knn_acc", True)
    assert sweep.headline(job("multissl.domains.rl.RLDomain")) == ("state_r2_mean", True)
    assert sweep.headline(job("multissl.domains.tabular.TabularDomain")) == ("probe_linear", False)


@pytest.mark.slow
def test_the_multirun_command_runs_a_sweep(tmp_path):
    folder = tmp_path / "sweep"
    done = subprocess.run([sys.executable, "-m", "multissl.train", "-m", *FAST, "trainer.max_steps=1",
                           f"data.path={tmp_path}/missing,null", f"run.dir={folder}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert (folder / "summary.md").read_text() in done.stdout
    rows = json.loads((folder / "summary.json").read_text())["rows"]
    assert [(r["seeds"], r["failed"]) for r in rows] == [(0, 1), (1, 0)]
    assert (folder / "data.path=null" / "encoder").is_dir()
