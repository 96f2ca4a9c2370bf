"""Plugins without a fork: `group=module:Class` (its signature is its config), entry points of installed packages,
and user config folders — each composed, trained, named in the run folder and the resume command, and opened again
by load_encoder as built-ins are; anything else a file names stays refused."""
import json
import os

import pytest
import torch

import multissl
from multissl import plugins, registry
from multissl.cli import load_config, options, usage
from multissl.errors import UserError
from multissl.train import resume_command, run

from tiny import TINY, TINY_ENCODER

SEQ = "toys:ToySequences"  # tests/ is on sys.path (conftest): a module of the user's own


def fail_line(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        load_config(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


@pytest.fixture
def entry_points(tmp_path, monkeypatch):
    """An installed package declaring entry points: a dist-info folder on sys.path, as pip leaves one."""
    def install(**groups):
        info = tmp_path / "site" / "toyplugin-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplugin\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("".join(
            f"[multissl.{g}s]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for g, eps in groups.items()))
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        plugins._entry_points.cache_clear()
        plugins.entry_point_classes.cache_clear()
    yield install
    plugins._entry_points.cache_clear()
    plugins.entry_point_classes.cache_clear()


def test_module_class_takes_its_signature_as_its_config(capsys):
    cfg = load_config([f"domain={SEQ}", "domain.n=64"])
    assert cfg.domain._target_ == "toys.ToySequences" and cfg.meta.domain == SEQ
    assert {k: v for k, v in cfg.domain.items() if k != "_target_"} == {
        "n": 64, "min_len": 4, "max_len": 12, "features": 3, "mask_ratio": 0.5, "noise": 0.05}  # no data=, state=
    err = fail_line(capsys, [f"domain={SEQ}", "domain.patch_size=4"])
    assert "unknown key domain.patch_size; valid keys under domain:" in err and "max_len" in err
    assert "cannot import 'no_such_module'" in fail_line(capsys, ["objective=no_such_module:Thing"])
    assert "module 'toys' has no 'Nothing'" in fail_line(capsys, ["objective=toys:Nothing"])


class Needy:
    name = "needy"

    def __init__(self, rate: int, data=None, state=None):
        self.rate = rate


def test_a_required_constructor_argument_must_be_given(capsys):
    err = fail_line(capsys, [f"domain={__name__}:Needy"])
    assert "domain.rate has no default in the class; set domain.rate=…" in err
    assert load_config([f"domain={__name__}:Needy", "domain.rate=8"]).domain.rate == 8


def test_a_module_class_run_gets_its_folder_name_resume_command_and_export(tmp_path, monkeypatch):
    argv = [*TINY_ENCODER, *TINY, f"domain={SEQ}", "objective=toys:QueueContrast", "trainer.max_steps=2",
            "data.batch_size=8", f"run.dir={tmp_path / 'run'}"]
    folder = run(load_config(argv))
    command = resume_command(load_config(argv), folder, 1)
    assert f"domain={SEQ}" in command and "objective=toys:QueueContrast" in command
    meta = json.loads((folder / "encoder" / "config.json").read_text())
    assert meta["domain"]["_target_"] == "toys.ToySequences"
    monkeypatch.setattr(registry, "_registered", {})  # as in a fresh process
    with pytest.raises(UserError, match="'toys.ToySequences'.*not a class multissl knows"):
        multissl.load_encoder(folder)  # neither installed nor registered: a file cannot build it
    multissl.register(__import__("toys").ToySequences)
    assert multissl.load_encoder(folder).embed([torch.randn(5, 3)]).shape == (1, 16)
    no_dir = load_config([f"domain={SEQ}", "objective=toys:QueueContrast"])
    from multissl.train import run_folder
    assert run_folder(no_dir).name.startswith("ToySequences-QueueContrast-")


def test_entry_points_are_names_listed_by_help_and_trusted_by_load_encoder(tmp_path, entry_points):
    entry_points(domain={"toyseq": SEQ}, objective={"toyqueue": "toys:QueueContrast"})
    assert "toyseq" in options("domain") and "toyqueue" in options("objective")
    assert "toyseq" in usage() and "toyqueue" in usage()
    cfg = load_config([*TINY_ENCODER, *TINY, "domain=toyseq", "objective=toyqueue", "trainer.max_steps=2",
                       "data.batch_size=8", f"run.dir={tmp_path / 'run'}"])
    assert cfg.meta.domain == "toyseq" and cfg.domain._target_ == "toys.ToySequences"
    folder = run(cfg)
    assert multissl.load_encoder(folder).embed([torch.randn(7, 3), torch.randn(4, 3)]).shape == (2, 16)


def test_a_user_config_folder_adds_recipes_and_classes(tmp_path, capsys, monkeypatch):
    for group, name, text in (("objective", "simclr_hot", "_target_: multissl.objectives.simclr.SimCLR\n"
                                                          "temperature: 0.5\n"),
                              ("domain", "toyseq", "_target_: toys.ToySequences\nn: 40\n")):
        (tmp_path / "cfg" / group).mkdir(parents=True, exist_ok=True)
        (tmp_path / "cfg" / group / f"{name}.yaml").write_text(text)
    monkeypatch.setattr(plugins, "_dirs", [])
    cfg = load_config(["--config-dir", str(tmp_path / "cfg"), "objective=simclr_hot", "domain=toyseq"])
    assert cfg.objective.temperature == 0.5 and cfg.domain.n == 40 and cfg.meta.objective == "simclr_hot"
    assert "--config-dir" in cfg.meta.overrides  # the resume command finds the folder again
    monkeypatch.setattr(plugins, "_dirs", [])
    assert "unknown objective 'simclr_hot'" in fail_line(capsys, ["objective=simclr_hot"])
    monkeypatch.setenv("MULTISSL_CONFIG_PATH", str(tmp_path / "cfg"))
    assert "simclr_hot" in options("objective")
    assert load_config(["objective=simclr_hot"]).objective.temperature == 0.5
    monkeypatch.setenv("MULTISSL_CONFIG_PATH", os.pathsep.join([str(tmp_path / "none")]))
    assert "simclr_hot" not in options("objective")
    err = fail_line(capsys, ["--config-dir", str(tmp_path / "none"), "objective=simclr"])
    assert "is not a folder" in err


def test_help_names_the_objectives_that_need_a_capability_from_the_one_compatibility_rule():
    assert "objective=spr trains on domain=rl\n" in usage()
    assert "objective=mae trains on" not in usage()  # every built-in domain has masked modelling


def test_a_built_in_class_given_as_a_class_is_written_as_the_registry_names_it(tmp_path, monkeypatch):
    from multissl.domains.image.domain import ImageDomain
    cfg = load_config([f"domain={ImageDomain.__module__}:ImageDomain"])
    assert cfg.domain._target_ == "multissl.domains.image.ImageDomain"  # opens in a fresh process, unregistered
    assert registry.known(cfg.domain._target_)


def test_setting_a_target_by_hand_is_refused_with_the_module_class_form(capsys):
    err = fail_line(capsys, ["domain._target_=toys.ToySequences"])
    assert "domain._target_ cannot be set: name the class as domain=module:Class" in err
    assert "domain=toys:ToySequences" in err


def test_a_domain_chooses_the_objective_for_its_data_unless_the_command_names_one(capsys):
    """`default_objective`: asked when the command names neither objective= nor an objective.* key, said on stderr,
    and taken only where it can train with the domain (else the config's default stays, silently)."""
    cfg = load_config(["domain=toys:PrefersByol"])
    assert cfg.meta.objective == "byol" and cfg.objective._target_.endswith("BYOL")
    assert ("multissl: objective=byol, domain=toys:PrefersByol's choice for this data: its sequences say so (name "
            "objective= to choose another)") in capsys.readouterr().err
    for chosen, want in ((["objective=vicreg"], "vicreg"), (["objective.temperature=0.2"], "simclr")):
        assert load_config(["domain=toys:PrefersByol", *chosen]).meta.objective == want
    assert "objective=" not in capsys.readouterr().err
    assert load_config(["domain=toys:PrefersSpr"]).meta.objective == "simclr"
    assert "objective=" not in capsys.readouterr().err
