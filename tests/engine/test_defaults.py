"""One source of defaults: a class's signature is its recipe, the one behind the documented figures, so a Python user
who builds `SwAV(encoder, domain)` gets what `objective=swav` gets. The registry's main config of a class (a YAML
that starts with its `_target_`) names only values equal to the class's defaults; a recipe of another config's class
(vicreg_exp.yaml, rdm_byol.yaml: a YAML that opens with a comment saying what it changes) overrides them on purpose."""
import inspect
from collections.abc import Mapping
from importlib import resources

import pytest
import yaml
from hydra.utils import get_class

ROOT = resources.files("multissl.configs")
CONFIGS = [(g, p.name) for g in ("domain", "objective", "encoder") for p in sorted((ROOT / g).iterdir())
           if p.name.endswith(".yaml")]


def node(group: str, name: str):
    tree = yaml.safe_load((ROOT / group / name).read_text())
    return tree.get(group, tree) if "_target_" not in tree else tree  # `# @package _global_` options nest it


def is_recipe_of_another(group: str, name: str) -> bool:
    lines = [x for x in (ROOT / group / name).read_text().splitlines() if x.strip() and not x.startswith("# @package")]
    return lines[0].startswith("#")


def same(default, value) -> bool:
    if isinstance(default, Mapping):
        default = dict(default)
    if isinstance(default, tuple):
        default = list(default)
    if isinstance(default, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(default) == float(value)
    return default == value


@pytest.mark.parametrize("group, name", CONFIGS, ids=[f"{g}/{n}" for g, n in CONFIGS])
def test_a_main_config_names_only_its_classes_defaults(group, name):
    cfg = node(group, name)
    params = inspect.signature(get_class(cfg["_target_"]).__init__).parameters
    unknown = [k for k in cfg if k != "_target_" and k not in params]
    assert not unknown, f"{name} names {unknown}, which {cfg['_target_']} does not take"
    if is_recipe_of_another(group, name):
        return
    differ = {k: (params[k].default, v) for k, v in cfg.items() if k != "_target_" and not same(params[k].default, v)}
    assert not differ, f"{group}/{name} and {cfg['_target_']} disagree (class default, YAML): {differ}"


@pytest.mark.parametrize("group, name", CONFIGS, ids=[f"{g}/{n}" for g, n in CONFIGS])
def test_a_config_names_every_option_of_its_class(group, name):
    """The command line sets only keys the composed config holds: a keyword the YAML leaves out could not be set with
    `objective.<key>=` (what the engine passes itself — the encoder, the domain, its state, in-memory data — aside)."""
    cfg = node(group, name)
    params = inspect.signature(get_class(cfg["_target_"]).__init__).parameters
    passed = ("self", "encoder", "domain", "state", "data")
    missing = [k for k, v in params.items() if k not in cfg and k not in passed
               and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
    assert not missing, f"{group}/{name} leaves out {missing}: `{group}.{missing[0]}=` could not be set"


def test_the_recipes_behind_the_documented_figures_are_the_classes_defaults():
    from multissl.domains.image import ImageDomain
    from multissl.objectives.dino import DINO
    from multissl.objectives.rdm import RDM
    from multissl.objectives.swav import SwAV

    def default(cls, key):
        return inspect.signature(cls.__init__).parameters[key].default
    assert default(SwAV, "epsilon") == 0.02  # the paper's 0.05 (3000 prototypes) collapsed the codes with 128
    assert default(DINO, "use_bn") is True
    assert (default(RDM, "online"), default(RDM, "target_power")) == ("none", -1.0)  # the whitened target
    from multissl.domains.image import recipe
    assert (default(ImageDomain, "crop_scale"), default(ImageDomain, "flip")) == (None, None)  # from the images:
    assert recipe.VIEWS["glyphs"] == {"crop_scale": (0.5, 1.0), "flip": 0.0}  # the digits' (tests/domains/image)
