"""Hydra's composition of `train` with a command's overrides, cached: the config files a set of group choices composes
(the slow part) are composed once per process and copied, and the `key=value` overrides applied to the copy as Hydra
applies them (multissl.cli adds the checks, the choices made from the data and the one-line errors)."""
import functools
import os
import pickle
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from multissl import plugins

GROUPS = ("domain", "objective", "encoder")


def parse_packaged_configs_once():
    """Hydra parses every YAML of a composition again on each compose (its own ten and ours); the ones shipped in
    packages cannot change while the process runs, so each is parsed once and copied (a sweep and the test suite
    compose thousands). Left as it is if Hydra's internals differ: composing is then just slower."""
    import dataclasses
    try:
        from hydra._internal.core_plugins.importlib_resources_config_source import ImportlibResourcesConfigSource
    except ImportError:
        return
    load = ImportlibResourcesConfigSource.load_config
    if getattr(load, "parsed", None) is not None:
        return
    parsed = {}

    def load_config(self, config_path: str):
        key = (self.path, config_path)
        if key not in parsed:
            r = load(self, config_path)
            parsed[key] = r, OmegaConf.to_container(r.config)
        r, plain = parsed[key]  # create() builds new nodes: Hydra may change them, never `plain`
        return dataclasses.replace(r, config=OmegaConf.create(plain), header=dict(r.header))
    load_config.parsed = parsed
    ImportlibResourcesConfigSource.load_config = load_config


def compose_hydra(overrides: list[str]):
    parse_packaged_configs_once()
    GlobalHydra.instance().clear()
    dirs = plugins.config_dirs()
    if dirs:  # user config folders, searched after the built-in registry (a YAML of the same name wins)
        overrides = [f"hydra.searchpath=[{','.join(f'file://{d}' for d in dirs)}]", *overrides]
    with initialize_config_module("multissl.configs", version_base=None):
        return compose("train", overrides=overrides, return_hydra_config=True)


def value_overrides(overrides: list[str]):
    """(the overrides that pick config files, the parsed `section.key=value` ones) — or None where any override is
    one Hydra treats otherwise (a sweep, a hydra.* key, a group path or package): those compose the Hydra way."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.core.override_parser.types import OverrideType
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # a bad override: Hydra's own path says what is wrong
        return None
    values = [o for o in parsed if "." in o.key_or_group]
    if any(o.is_sweep_override() or o.type not in (OverrideType.CHANGE, OverrideType.ADD, OverrideType.DEL)
           or o.key_or_group.startswith("hydra.") or "/" in o.key_or_group or o.package is not None for o in values):
        return None
    return [o.input_line for o in parsed if "." not in o.key_or_group], values, parsed


def config_files() -> tuple:
    """What a composition reads besides the packaged YAML: the user folders' files (as they are now) and the configs
    stored for module:Class and entry-point choices."""
    files = tuple((str(p), p.read_bytes()) for d in plugins.config_dirs() for p in sorted(Path(d).rglob("*.yaml")))
    stored = ConfigStore.instance().repo
    return files, tuple((g, k, str(v.node)) for g in GROUPS for k, v in sorted(stored.get(g, {}).items()))


def compose_raw(overrides: list[str]):
    """Hydra's composition of `train` with `overrides`. The config files a set of choices composes (the slow part) are
    composed once per process and copied; the `section.key=value` overrides are then applied to the copy by Hydra's
    own function, in order, as its compose does after composing the files."""
    split = value_overrides(overrides)
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
    except ImportError:
        split = None
    if split is None:
        return compose_hydra(overrides)
    choices, values, parsed = split
    cfg = pickle.loads(frozen(tuple(choices), config_files()))  # a copy: OmegaConf's deepcopy is ~20x slower
    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
    job = cfg.hydra.job  # what Hydra's compose writes from the overrides
    cfg.hydra.overrides.task = [o.input_line for o in parsed]
    job.override_dirname = get_overrides_dirname(parsed, **job.config.override_dirname)
    cfg.hydra.runtime.cwd = os.getcwd()
    return cfg


composed = {}  # composed_choices': (choices, config_files()) -> the composed config, never changed


def composed_choices(choices: tuple, files: tuple):
    """The composition of `choices` (group=option overrides), each set once per process. Where every choice is a
    group's option that, composed alone, changes nothing but its own group's node (the packaged options; not one that
    writes elsewhere, e.g. a user YAML in the _global_ package), the set is the default composition with those nodes
    put in: what Hydra composes, without composing each combination (the registry's pairs, a sweep's grid)."""
    key = (choices, files)
    if key in composed:
        return composed[key]
    groups = [c.partition("=")[0] for c in choices]
    if len(choices) > 1 and len(set(groups)) == len(groups) and set(groups) <= set(GROUPS):
        base, parts = composed_choices((), files), [composed_choices((c,), files) for c in choices]
        if all(alone(base, part, g) for part, g in zip(parts, groups)):
            cfg = pickle.loads(frozen((), files))
            for part, g in zip(parts, groups):
                cfg[g] = part[g]  # OmegaConf copies a node it is given
                cfg.hydra.runtime.choices[g] = part.hydra.runtime.choices[g]
            composed[key] = cfg  # what Hydra records of the overrides, compose_raw writes
            return cfg
    composed[key] = compose_hydra(list(choices))
    return composed[key]


@functools.lru_cache(maxsize=None)
def frozen(choices: tuple, files: tuple) -> bytes:
    """composed_choices' config pickled, for copies."""
    return pickle.dumps(composed_choices(choices, files))


def outside(cfg, group: str) -> dict:
    """A composed config without `group`'s node and what Hydra records of the command itself."""
    out = OmegaConf.to_container(cfg)
    out.pop(group, None)
    hydra = out["hydra"]
    hydra["runtime"].pop("cwd")
    hydra["runtime"]["choices"].pop(group, None)
    hydra.pop("overrides")
    hydra["job"].pop("override_dirname")
    return out


def alone(base, part, group: str) -> bool:
    """Whether `part` (one option of `group` composed) differs from `base` (no choice) only in that group's node."""
    key = (id(base), id(part))  # both stay in `composed` for the process's life: their ids stay theirs
    if key not in separate:
        separate[key] = outside(base, group) == outside(part, group)
    return separate[key]


separate = {}  # alone's verdicts
