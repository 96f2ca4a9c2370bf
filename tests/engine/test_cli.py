"""The command line: one-line errors (exit 2, no traceback), --help built from the registry, and
in-process config composition."""
import subprocess
import sys
from importlib import resources
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from multissl import cli as cli_module
from multissl.cli import load_config
from multissl.train import main

CONFIGS = resources.files("multissl.configs")
GROUPS = ("domain", "objective", "encoder")


def yaml_names(group: str) -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in (CONFIGS / group).iterdir() if p.name.endswith(".yaml"))


def base_keys(section: str) -> list[str]:
    return list(OmegaConf.create((CONFIGS / "train.yaml").read_text())[section].keys())


def cli(capsys, *args):
    """`python -m multissl.train <args>` in this process (a subprocess costs seconds of imports): its exit status
    and output. A traceback would surface here as an exception other than SystemExit."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return SimpleNamespace(returncode=e.value.code, stdout=out.out, stderr=out.err)


def one_error_line(p) -> str:
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("multissl: error:")
    return lines[0]


@pytest.mark.slow
def test_unknown_group_option_lists_the_choices(tmp_path):
    p = subprocess.run([sys.executable, "-m", "multissl.train", "objective=nope"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)  # the real entry point, once
    line = one_error_line(p)
    assert p.returncode == 2
    assert "nope" in line
    choices = yaml_names("objective")
    assert "simclr" in choices
    for name in choices:
        assert name in line


def test_unknown_key_names_it_and_lists_valid_keys(capsys):
    p = cli(capsys, "trainer.nope=1")
    line = one_error_line(p)
    assert p.returncode == 2
    assert "trainer.nope" in line
    keys = base_keys("trainer")
    assert "max_steps" in keys
    missing = [k for k in keys if k not in line]
    assert not missing, f"valid trainer keys not listed: {missing} in {line!r}"


def test_argument_without_equals_is_rejected(capsys):
    p = cli(capsys, "max_steps")
    line = one_error_line(p)
    assert "max_steps" in line


def test_help_lists_groups_and_keys(capsys):
    p = cli(capsys, "--help")
    assert p.returncode == 0, p.stderr
    for g in GROUPS:
        for name in yaml_names(g):
            assert name in p.stdout, (g, name)
    for section in ("data", "trainer", "optim"):
        for k in base_keys(section):
            assert f"{section}.{k}" in p.stdout
    assert "trainer.max_steps" in p.stdout


def test_load_config_composes_group_and_meta():
    cfg = load_config(["domain=image", "objective=mae", "trainer.max_steps=7"])
    assert cfg.objective._target_.endswith("MAE")
    assert cfg.meta.objective == "mae"
    assert cfg.meta.domain == "image"
    assert cfg.meta.encoder == "transformer"  # the default in train.yaml
    assert cfg.trainer.max_steps == 7
    assert "hydra" not in cfg


def test_a_group_option_sets_the_engine_defaults_it_needs_and_the_command_line_wins():
    """encoder/nature_cnn.yaml carries its own optim.base_lr (train.yaml's suits the tiny transformer):
    train.yaml lists _self_ first, so the option's value wins over it, and a key=value over both."""
    assert load_config([]).optim.base_lr == 3e-3
    assert load_config(["domain=rl", "encoder=nature_cnn"]).optim.base_lr == 1e-4
    assert load_config(["encoder=nature_cnn", "optim.base_lr=5e-4"]).optim.base_lr == 5e-4
    assert load_config(["optim.base_lr=5e-4", "encoder=nature_cnn"]).optim.base_lr == 5e-4


def test_main_turns_user_error_into_exit_2(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    with pytest.raises(SystemExit) as e:
        main([f"data.path={missing}", f"run.dir={tmp_path / 'run'}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("multissl: error:")
    assert str(missing) in err[0]


def test_non_integer_max_steps_is_a_one_line_error(tmp_path, capsys):
    """A badly typed value is user input too: exit 2 with one line, not a TypeError from tqdm."""
    with pytest.raises(SystemExit) as e:
        main(["trainer.max_steps=abc", "encoder.dim=16", "encoder.depth=1", "encoder.heads=2",
              "data.batch_size=32", f"run.dir={tmp_path / 'run'}"])
    assert e.value.code == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("multissl: error:")]
    assert len(err) == 1 and "max_steps" in err[0]


def composed(overrides) -> dict:
    cfg = OmegaConf.to_container(cli_module.compose_raw(list(overrides)))
    cfg["hydra"]["runtime"].pop("cwd")
    return cfg


@pytest.mark.parametrize("overrides", [
    ["domain=audio", "objective=ibot", "encoder.dim=16", "trainer.strategy=fsdp"],
    ["data.batch_size=4", "domain=text", "data.batch_size=8", "+domain.extra=3"],  # a value before its group, twice
    ["objective=simclr", "~objective.temperature"], ["trainer.seed=3"], []])
def test_composing_the_same_choices_again_gives_what_hydra_composes(overrides):
    """Each set of choices is composed once per process and copied; the key=value overrides applied to the copy give
    Hydra's own composition (the config and Hydra's record of the overrides), whatever came before."""
    hydra = OmegaConf.to_container(cli_module.compose_hydra(list(overrides)))
    hydra["hydra"]["runtime"].pop("cwd")
    assert composed(overrides) == hydra and composed(overrides) == hydra  # a fresh composition, then a copy


@pytest.mark.parametrize("bad", [["trainer.nonexistent=3"], ["+trainer.max_steps=3"], ["domain.patch_size=[1,2"],
                                 ["objective.temperature=0.1,0.2"], ["domain=nope"]])
def test_a_bad_override_fails_as_hydra_fails_it(bad):
    errors = []
    for compose in (cli_module.compose_hydra, cli_module.compose_raw, cli_module.compose_raw):
        with pytest.raises(Exception) as e:
            compose(bad)
        errors.append((type(e.value), str(e.value)))
    assert errors[0] == errors[1] == errors[2]


def test_every_objective_and_domain_composed_with_another_is_what_hydra_composes():
    """A set of choices is put together from each choice composed alone: for each objective with a domain that is not
    the default, and each domain with an encoder that is not, the result is Hydra's composition of the set."""
    from multissl.cli import options
    domains, objectives = options("domain"), options("objective")
    sets = [[f"domain={domains[i % len(domains)]}", f"objective={o}"] for i, o in enumerate(objectives)]
    sets += [[f"domain={d}", "encoder=mlp", "objective=byol"] for d in domains]
    for choices in sets:
        hydra = OmegaConf.to_container(cli_module.compose_hydra(choices))
        hydra["hydra"]["runtime"].pop("cwd")
        assert composed(choices) == hydra, choices


def test_a_user_option_that_writes_outside_its_group_is_composed_by_hydra(tmp_path, monkeypatch):
    """A YAML in the _global_ package sets keys of other sections: such a choice is not put together from parts."""
    (tmp_path / "objective").mkdir()
    (tmp_path / "objective" / "quick.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /objective/simclr@objective\n  - _self_\ntrainer:\n  max_steps: 7\n")
    monkeypatch.setenv("MULTISSL_CONFIG_PATH", str(tmp_path))
    got = composed(["domain=audio", "objective=quick"])
    hydra = OmegaConf.to_container(cli_module.compose_hydra(["domain=audio", "objective=quick"]))
    hydra["hydra"]["runtime"].pop("cwd")
    assert got == hydra and got["trainer"]["max_steps"] == 7 and got["domain"]["_target_"].endswith("AudioDomain")


def test_a_user_config_edited_between_two_compositions_is_read_again(tmp_path, monkeypatch):
    (tmp_path / "objective").mkdir()
    mine = tmp_path / "objective" / "mine.yaml"
    mine.write_text("defaults:\n  - simclr\n  - _self_\ntemperature: 0.3\n")
    monkeypatch.setenv("MULTISSL_CONFIG_PATH", str(tmp_path))
    assert composed(["objective=mine", "trainer.seed=1"])["objective"]["temperature"] == 0.3
    mine.write_text("defaults:\n  - simclr\n  - _self_\ntemperature: 0.7\n")
    assert composed(["objective=mine", "trainer.seed=1"])["objective"]["temperature"] == 0.7
