"""The classes a file may build. A file written by someone else — an exported encoder's config.json, a run folder's
config.yaml — names its domain, encoder and objective by `_target_`. Opening one builds only the classes multissl
knows: the `_target_` of every option of the config registry (`multissl.configs`), the classes a user registered
with `register`, and the plugins the user installed (entry points) or configured (a user config folder). Every `_target_` in the file, nested ones too, is checked before anything is built, and the
arguments reach the class as plain data: nothing in a file is ever called (Hydra's `instantiate` would call every
nested `_target_`, and `pandas.read_pickle` runs a pickle)."""
import functools
import json
from importlib import resources
from pathlib import Path

import yaml

from multissl.errors import UserError, reason

GROUPS = ("domain", "objective", "encoder")
_registered: dict[str, type] = {}


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type) -> type:
    """Let files build `cls` (a domain, encoder or objective of your own), e.g. `load_encoder` on an export of a run
    that used it. Returns cls, so it can decorate the class."""
    _registered[class_path(cls)] = cls
    return cls


def targets(node) -> list[tuple[str, str]]:
    """(where, target) of every `_target_` in a tree of dicts and lists; where is a dotted path."""
    found, stack = [], [("", node)]
    while stack:
        where, n = stack.pop()
        items = n.items() if isinstance(n, dict) else enumerate(n) if isinstance(n, list) else ()
        for k, v in items:
            at = f"{where}.{k}" if where else str(k)
            if k == "_target_":
                found.append((where or "(top)", v))
            else:
                stack.append((at, v))
    return found


@functools.cache
def builtin() -> frozenset:
    """The `_target_` of every option in the config registry's groups (the built-in domains, encoders, objectives)."""
    root = resources.files("multissl.configs")
    return frozenset(t for g in GROUPS for p in (root / g).iterdir() if p.name.endswith(".yaml")
                     for _, t in targets(yaml.safe_load(p.read_text())))


def known(target) -> bool:
    """A built-in, a class registered in this process, or a plugin the user installed or configured: an entry point's
    class or a `_target_` of a user config folder (multissl.plugins)."""
    if not isinstance(target, str):
        return False
    if target in builtin() or target in _registered:
        return True
    from multissl import plugins
    return target in plugins.trusted_targets() or target in plugins.entry_point_classes()


def check(tree: dict, source, groups=GROUPS):
    """Refuse a file that names any class multissl does not know, or a class anywhere but at the top of a group
    (multissl never writes one there), before anything is built."""
    for where, target in targets(tree):
        group = where.split(".")[0]
        if where != group or group not in groups or not known(target):
            raise UserError(f"{source} asks to build {target!r} (at {where}), which is not a class multissl knows; "
                            f"refusing to open it — a file can only build the built-in domains, encoders and "
                            f"objectives, installed plugins and classes registered with multissl.register")


def resolve(target: str) -> type:
    if target in _registered:
        return _registered[target]
    from multissl import plugins
    if target in plugins.entry_point_classes():
        return plugins.entry_point_classes()[target]
    from hydra.utils import get_class
    return get_class(target)  # a built-in, known to be one of multissl's classes


def build(node: dict, source, **kwargs):
    """The class at node["_target_"] (checked: `check`) built from the node's other keys, as plain data, plus
    kwargs."""
    cls = resolve(node["_target_"])
    args = {k: v for k, v in node.items() if k != "_target_"}
    try:
        return cls(**args, **kwargs)
    except TypeError as e:
        raise UserError(f"{source}: {node['_target_']} cannot be built from it ({reason(e)}); it was written by "
                        f"another version of multissl or edited") from None


def read_json(path: Path) -> dict:
    try:
        out = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path} cannot be read as JSON ({reason(e)}); write it again") from None
    if not isinstance(out, dict):
        raise UserError(f"{path} holds no JSON object; it is not a multissl file")
    return out


def read_yaml(path: Path) -> dict:
    """A run folder's config.yaml as plain data (yaml's safe loader: no tags, no interpolation)."""
    try:
        out = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{path} cannot be read as YAML ({reason(e)}); write it again") from None
    if not isinstance(out, dict):
        raise UserError(f"{path} holds no mapping; it is not a multissl config")
    return out
