"""Where the names of `domain=`, `objective=` and `encoder=` come from, besides the built-in config folders:

- a user config folder (`--config-dir DIR` on the command line, or the folders of `MULTISSL_CONFIG_PATH`, separated
  like PATH) holding `domain/`, `objective/`, `encoder/` YAMLs: new recipes, or new classes by `_target_`;
- entry points of installed packages, groups `multissl.domains`, `multissl.objectives`, `multissl.encoders`
  (`sensors = "my_pkg.domain:SensorDomain"`): the name picks the class;
- `module:Class` itself (`domain=my_pkg.domain:SensorDomain`).

A class picked by name or `module:Class` gets its own constructor defaults as its config (its signature is its
recipe); `domain.<key>=…` overrides them and a key it does not take is refused, as for the built-ins."""
import functools
import importlib
import inspect
import os
import re
from collections.abc import Mapping
from importlib import metadata, resources
from pathlib import Path

from multissl.errors import UserError, reason

GROUPS = ("domain", "objective", "encoder")
ENTRY_POINTS = {g: f"multissl.{g}s" for g in GROUPS}
# arguments the engine passes itself, never config keys
PASSED = {"domain": ("data", "state"), "objective": ("encoder", "domain"), "encoder": ("domain",)}
_dirs: list[Path] = []  # --config-dir folders of this process's command lines


def add_config_dir(path) -> Path:
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise UserError(f"--config-dir {path} is not a folder; point it at a folder holding domain/, objective/ or "
                        f"encoder/ YAMLs")
    if p not in _dirs:
        _dirs.append(p)
    return p


def config_dirs() -> list[Path]:
    """User config folders: MULTISSL_CONFIG_PATH's, then --config-dir's (a later folder's YAML of the same name wins)."""
    env = [Path(p).expanduser().resolve() for p in os.environ.get("MULTISSL_CONFIG_PATH", "").split(os.pathsep) if p]
    return list(dict.fromkeys([*env, *_dirs]))


def yaml_options(group: str) -> dict[str, object]:
    """name -> YAML file of every config-folder option: the built-in registry, then the user folders."""
    out = {p.name[:-5]: p for p in (resources.files("multissl.configs") / group).iterdir() if p.name.endswith(".yaml")}
    for d in config_dirs():
        out |= {p.stem: p for p in sorted((d / group).glob("*.yaml"))}
    return out


@functools.cache
def _entry_points(group: str) -> dict:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINTS[group])}


def entry_point_names(group: str) -> list[str]:
    return sorted(_entry_points(group))


def options(group: str) -> list[str]:
    """Every name `group=` takes: config-folder options and entry points."""
    return sorted({*yaml_options(group), *_entry_points(group)})


def load_class(spec: str, what: str) -> type:
    """`module:Class` (dots inside Class for a nested one) -> the class, or one line saying what is wrong."""
    module, _, name = spec.partition(":")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise UserError(f"{what}: cannot import {module!r} ({reason(e)}); install the package that holds it or put "
                        f"its folder on PYTHONPATH") from None
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UserError(f"{what}: module {module!r} has no {name!r}; check the name (module:Class)")
    if not inspect.isclass(obj):
        raise UserError(f"{what}: {spec} is not a class; name a class (module:Class)")
    return obj


def plugin_class(group: str, value: str) -> type | None:
    """The class `group=value` picks when value is an entry point or `module:Class`; None for a config-folder option
    (its YAML names the class)."""
    if ":" in value:
        return load_class(value, f"{group}={value}")
    ep = _entry_points(group).get(value)
    if ep is None or value in yaml_options(group):
        return None
    return load_class(ep.value, f"{group}={value} (entry point of {ep.dist.name if ep.dist else 'a package'})")


def plain(value, where: str):
    """A signature default as config data (tuples -> lists, read-only mappings -> dicts), or a one-line error."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    raise UserError(f"{where} defaults to {type(value).__name__} {value!r}, which a config cannot hold; give it a "
                    f"default of plain data (numbers, strings, lists, mappings, None)")


def class_config(cls: type, group: str) -> dict:
    """The class's constructor signature as its config: `_target_` and every keyword with its default ("???":
    required, MISSING to OmegaConf); the arguments the engine passes (PASSED) are left out."""
    node = {"_target_": builtin_target(cls) or f"{cls.__module__}.{cls.__qualname__}"}
    for p in inspect.signature(cls).parameters.values():
        if p.name in PASSED[group] or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        node[p.name] = "???" if p.default is p.empty else plain(p.default, f"{group}.{p.name} of {node['_target_']}")
    return node


def builtin_target(cls: type) -> str | None:
    """The registry's own `_target_` for a built-in class given as a class (`multissl.domains.image.ImageDomain`, not
    the module it is defined in), so that its exports open as the built-in's do."""
    from multissl.registry import builtin
    for target in sorted(builtin()):
        module, _, name = target.rpartition(".")
        try:
            if getattr(importlib.import_module(module), name, None) is cls:
                return target
        except ImportError:  # a built-in whose extra is not installed cannot be the class given
            continue
    return None


def store_name(value: str) -> str:
    """The config-store name a plugin class's node is kept under (a name Hydra's grammar accepts)."""
    return "plugin_" + re.sub(r"\W", "_", value)


def folder_name(value: str) -> str:
    """A choice as it appears in a run folder's name: `my_pkg.domain:SensorDomain` -> SensorDomain."""
    return re.sub(r"[^\w.-]", "_", value.rsplit(":", 1)[-1].rsplit(".", 1)[-1])


def trusted_targets() -> set[str]:
    """The `_target_`s of user config folders and the classes of installed entry points: what files may build
    besides the built-ins and multissl.register'ed classes (see multissl.registry)."""
    import yaml
    out = set()
    for g in GROUPS:
        for d in config_dirs():
            for p in (d / g).glob("*.yaml"):
                node = yaml.safe_load(p.read_text()) or {}
                if isinstance(node, dict) and isinstance(node.get("_target_"), str):
                    out.add(node["_target_"])
    return out


@functools.cache
def entry_point_classes() -> dict[str, type]:
    """class path -> class of every installed entry point (loaded: the packages are installed, so their code is
    the user's own choice; a file naming one is built as for a built-in)."""
    out = {}
    for g in GROUPS:
        for name, ep in _entry_points(g).items():
            cls = plugin_class(g, ep.value)
            out[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return out
