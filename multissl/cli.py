"""Config composition for the CLI: Hydra's compose API over the `multissl.configs` registry and the user's plugins
(multissl.plugins), with one-line errors (no traceback wall) and a help text built from the registry itself. What
depends on the chosen options (the domain's encoder for its data, the encoder's learning rate) is decided here, so
the config a run saves is the config it ran."""
import functools
import os
import sys
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import ListConfig, OmegaConf, open_dict

from multissl import plugins
from multissl.compose import GROUPS, compose_hydra, compose_raw  # noqa: F401 (compose_hydra: tests compare with it)
from multissl.errors import UserError
CHOICES = {("trainer", "precision"): ("auto", "no", "bf16", "fp16"), ("optim", "name"): ("adamw", "lars"),
           ("optim", "scale_rule"): ("linear", "sqrt", "none"), ("trainer", "strategy"): ("ddp", "fsdp", "average")}


def options(group: str) -> list[str]:
    """Every name `group=` takes: the config registry, user config folders, installed entry points."""
    return plugins.options(group)


def option_class(group: str, name: str):
    """The class an option names (its YAML's `_target_`, an entry point's or `module:Class`'s), composing nothing."""
    cls = plugins.plugin_class(group, name)
    if cls is not None:
        return cls
    return get_class(yaml_target(plugins.yaml_options(group)[name]))


def yaml_target(path) -> str:
    """The `_target_` of an option's YAML, read once per version of the file (the test suite and `pairs` ask for
    every option's class many times; parsing the YAML each time was most of a collection)."""
    try:
        stat = os.stat(path)
    except (OSError, TypeError):  # not a file on disk (a package read from an archive): read it each time
        return OmegaConf.load(path)._target_
    return _yaml_target(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=None)
def _yaml_target(path: str, mtime_ns: int, size: int) -> str:
    return OmegaConf.load(path)._target_


def pairs() -> list[tuple[str, str]]:
    """Every (domain, objective) of the registry that can train together (multissl.contracts.compatible)."""
    from multissl.contracts import compatible
    return [(d, o) for d in options("domain") for o in options("objective")
            if compatible(option_class("domain", d), option_class("objective", o)) is None]


def fail(msg: str):
    raise UserError(msg)


def usage() -> str:
    base = compose_raw([])
    lines = ["usage: python -m multissl.train [--config-dir DIR] [-m] [group=option …] [key=value …]",
             "       accelerate launch -m multissl.train domain=audio objective=byol", ""]
    for g in GROUPS:
        lines.append(f"  {g}=  {' | '.join(options(g))}")
    fit = pairs()
    domains = options("domain")
    for o in options("objective"):  # what contracts.compatible allows: objectives that need a capability
        only = [d for d in domains if (d, o) in fit]
        if len(only) < len(domains):
            lines.append(f"  objective={o} trains on domain={' | '.join(only) or '(none installed)'}")
    lines.append("")
    for section in ("data", "trainer", "optim", "ema", "run"):
        for k, v in base[section].items():
            lines.append(f"  {section}.{k}={v}")
    lines += ["", "Group options also take their own keys, e.g. domain.patch_size=4, objective.temperature=0.2.",
              "A group also takes module:Class (a class of your own; its signature is its config), the name of an",
              "installed plugin's entry point (multissl.domains/objectives/encoders), or a YAML of a user config",
              "folder (--config-dir DIR or MULTISSL_CONFIG_PATH). -m runs every combination of comma-separated values.",
              "Run folder: config.yaml, metrics.jsonl, tb/, checkpoints/, encoder/ (multissl.load_encoder)."]
    return "\n".join(lines)


def take_option(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    """(the value after `flag`, argv without the two) — (None, argv) when argv has no `flag`: a tool's own option
    beside the key=value overrides."""
    if flag not in argv:
        return None, list(argv)
    i = argv.index(flag)
    return (argv[i + 1] if i + 1 < len(argv) else None), argv[:i] + argv[i + 2:]


def config_dir_args(argv: list[str]) -> list[str]:
    """argv without its `--config-dir DIR` / `--config-dir=DIR` arguments, whose folders are added to the search."""
    rest, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--config-dir" or a.startswith("--config-dir="):
            path = a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else None)
            if not path:
                fail("--config-dir needs a folder: --config-dir DIR")
            plugins.add_config_dir(path)
            i += 1 if "=" in a else 2
            continue
        rest.append(a)
        i += 1
    return rest


def pick_groups(argv: list[str]) -> tuple[list[str], dict]:
    """argv with each `group=<entry point or module:Class>` turned into the config node its class's signature gives
    (kept in Hydra's config store), and the choices as the user named them."""
    out, named = [], {}
    for a in argv:
        key, _, value = a.partition("=")
        group = key.lstrip("+~")
        if group not in GROUPS or not _:
            out.append(a)
            continue
        cls = plugins.plugin_class(group, value)
        if cls is None and value not in plugins.yaml_options(group):
            fail(f"unknown {group} {value!r}; choose one of: {', '.join(options(group))} (or module:Class)")
        if cls is not None:
            ConfigStore.instance().store(group=group, name=plugins.store_name(value),
                                         node=plugins.class_config(cls, group))
            a = f"{key}={plugins.store_name(value)}"
        named[group] = value
        out.append(a)
    return out, named


def compose_checked(argv: list[str]):
    """The composed config with Hydra's errors reduced to the key that was wrong (one line, exit status 2)."""
    try:
        return compose_raw(list(argv))
    except Exception as e:  # Hydra/OmegaConf errors: reduce to the key that was wrong
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        keys = sorted((a.split("=")[0] for a in argv), key=len, reverse=True)  # domain.x before domain
        bad = next((k for k in keys if k.lstrip("+~") in msg), None)
        if bad and "." in bad:
            section = bad.lstrip("+~").rsplit(".", 1)[0]
            try:
                valid = ", ".join(OmegaConf.select(compose_raw([a for a in argv if not a.startswith(bad)]), section))
            except Exception:
                valid = "see --help"
            fail(f"unknown key {bad.lstrip('+~')}; valid keys under {section}: {valid}")
        fail(f"bad override: {msg}; see --help")


def continued_choice(cfg, group: str) -> tuple[str, str] | None:
    """(option, why) when the command continues a run (run.dir, else trainer.resume, holds its config.yaml): the
    option of `group` that run was made with, so that a choice made from the data (or a default changed since)
    never differs from its checkpoint's; None for a new run."""
    from multissl.registry import read_yaml
    folder = cfg.run.get("dir") or cfg.trainer.get("resume")
    path = Path(str(folder)) / "config.yaml" if folder else None
    option = (read_yaml(path).get("meta") or {}).get(group) if path and path.is_file() else None
    return (option, f"as the run in {folder} that this command continues was made with it") if option else None


def domain_choice(group: str, named: dict, cfg, dom) -> tuple[str | None, str | None]:
    """(option, why) of `group` for a command that names none: the option of the run it continues, else the domain's
    choice for its data (its `default_<group>`: a name, or (name, why)); (None, None) when neither gives one."""
    from multissl.contracts import Domain, optional
    from multissl.errors import needs_extras
    name, why = continued_choice(cfg, group) or (None, None)  # a continued run keeps what it was made with
    if name is None and callable(pick := optional(dom, Domain, f"default_{group}")):
        domain = named.get("domain", cfg.hydra.runtime.choices.domain)
        with needs_extras(f"domain={domain}"):  # it may look at the data (text: their lengths)
            keys_of_domain = {k: v for k, v in cfg.domain.items() if k != "_target_"}
            name = pick(OmegaConf.to_container(cfg.data), **keys_of_domain)
        name, why = name if isinstance(name, tuple) else (name, None)
        why = f"domain={domain}'s choice for this data{': ' + why if why else ''}"
    return name, why


def decide(argv: list[str], named: dict, cfg):
    """What the composed options decide for this data, when the command leaves it open: the objective, then the
    encoder (which must suit it), each when the command names neither `group=` nor a `group.*` key: the option of the
    run it continues, else the domain's choice for its data (`default_objective`: RL buffers -> spr;
    `default_encoder`: RL frames -> nature_cnn, short texts -> bag), taken when it can train with the rest; and the
    encoder's own learning rate (`base_lr`) when no optim.base_lr is. -> (argv, named) with those choices added."""
    from multissl.contracts import Encoder, compatible, optional
    keys = [a.split("=", 1)[0].lstrip("+~") for a in argv]
    dom = get_class(cfg.domain._target_)
    for group in ("objective", "encoder"):
        if any(k == group or k.startswith(f"{group}.") for k in keys):
            continue
        name, why = domain_choice(group, named, cfg, dom)
        if not name or name == cfg.hydra.runtime.choices[group] or not (":" in name or name in options(group)):
            continue  # a continued run's option set in code, not by name (tests' toys): the command's stands
        classes = {g: get_class(cfg[g]._target_) for g in ("objective", "encoder")} | {group: option_class(group, name)}
        if compatible(dom, classes["objective"], classes["encoder"]) is None:
            picked, _ = pick_groups([f"{group}={name}"])  # module:Class (a continued run's) goes by its stored config
            argv, named = [*argv, *picked], {**named, group: name}
            if os.environ.get("RANK", "0") == "0":
                print(f"multissl: {group}={name}, {why} (name {group}= to choose another)", file=sys.stderr)
            cfg = compose_checked(argv)
    lr = optional(get_class(cfg.encoder._target_), Encoder, "base_lr")
    if lr is not None and "optim.base_lr" not in keys:
        argv = [*argv, f"optim.base_lr={lr}"]
    return argv, named


def load_config(argv: list[str]):
    """compose_config for a command: --help prints the usage, and a bad choice or key is its one line on stderr and
    exit status 2."""
    if any(a in ("-h", "--help") for a in argv):
        config_dir_args([a for a in argv if a not in ("-h", "--help")])
        print(usage())
        sys.exit(0)
    try:
        return compose_config(argv)
    except UserError as e:
        print(f"multissl: error: {e}", file=sys.stderr)
        sys.exit(2)


def compose_config(argv: list[str]):
    """The run's config from command-line style overrides (`["domain=audio", "objective=byol"]`): the registry's
    defaults composed with them, every key and choice checked (an unknown one is a UserError naming the valid
    ones), and `meta` holding the chosen options and the overrides (for the resume command)."""
    given = list(argv)
    argv = config_dir_args(list(argv))
    for a in argv:
        if "=" not in a:
            fail(f"argument {a!r} is not key=value; see --help for the keys")
        key, value = a.split("=", 1)
        if key.lstrip("+~").endswith("._target_"):  # the other keys would be the old class's
            group = key.lstrip("+~").split(".")[0]
            fail(f"{key.lstrip('+~')} cannot be set: name the class as {group}=module:Class (its signature is its "
                 f"config), e.g. {group}={value.rpartition('.')[0] or 'my_pkg.module'}:{value.rpartition('.')[2]}")
    argv, named = pick_groups(argv)
    cfg = compose_checked(argv)
    decided, named = decide(argv, named, cfg)
    if decided != argv:
        argv, cfg = decided, compose_checked(decided)
    missing = sorted(k for g in GROUPS for k in OmegaConf.missing_keys(cfg[g]))  # full keys: domain.rate
    if missing:
        fail(f"{' and '.join(missing)} {'has' if len(missing) == 1 else 'have'} no default in the class; set "
             f"{' '.join(m + '=…' for m in missing)}")
    choices_only = [a for a in argv if a.split("=")[0].lstrip("+~") in GROUPS]
    if len(choices_only) < len(argv):  # some key was overridden: compare it with its default
        check_types(cfg, sections_of(tuple(plugins.config_dirs())))
    choices = cfg.hydra.runtime.choices
    with open_dict(cfg):
        meta = {**{g: named.get(g, choices[g]) for g in GROUPS}, "overrides": given}  # overrides: the resume command
        del cfg["hydra"]
        cfg.meta = meta
    OmegaConf.set_struct(cfg, True)
    return cfg


@functools.lru_cache(maxsize=16)
def sections_of(dirs: tuple):
    """The defaults check_types compares with: train.yaml's sections (data, trainer, optim, ema; no group option
    sets them), composed once per config folders, not once per command (the test suite composes thousands)."""
    return compose_raw([])


def check_types(cfg, default):
    """An override must have its default's type (an int where a float is expected is fine; a key whose default
    is "auto" takes "auto" or a count)."""
    for section in ("data", "trainer", "optim", "ema"):
        for key, want in default[section].items():
            got = cfg[section][key]
            if want is None or got is None:
                continue
            ok = isinstance(got, type(want)) or (isinstance(want, float) and isinstance(got, int))
            if isinstance(want, int) and isinstance(got, bool) and not isinstance(want, bool):
                ok = False
            if want == "auto" and (section, key) not in CHOICES:  # auto or a count (data.num_workers)
                ok = got == "auto" or isinstance(got, int) and not isinstance(got, bool) and got >= 0
                if not ok:
                    fail(f"{section}.{key} must be auto or a count of at least 0, got {got!r}")
            if not ok:
                kind = "a list" if isinstance(want, ListConfig) else type(want).__name__
                fail(f"{section}.{key} must be {kind} (like {want!r}), got {got!r}")
            if (section, key) in CHOICES and got not in CHOICES[section, key]:
                fail(f"{section}.{key}={got} is not one of: {', '.join(CHOICES[section, key])}")
