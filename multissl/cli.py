"""Config composition for the CLI: Hydra's compose API over the `multissl.configs` registry, with
one-line errors (no traceback wall) and a help text built from the registry itself."""
import sys
from importlib import resources

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import ListConfig, OmegaConf, open_dict

GROUPS = ("domain", "objective", "encoder")
CHOICES = {("trainer", "precision"): ("no", "bf16", "fp16"), ("optim", "name"): ("adamw", "lars"),
           ("optim", "scale_rule"): ("linear", "sqrt", "none")}


def options(group: str) -> list[str]:
    folder = resources.files("multissl.configs") / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def option_class(group: str, name: str):
    """The class a registry option names (its `_target_`), without composing a config."""
    from hydra.utils import get_class
    return get_class(OmegaConf.load(resources.files("multissl.configs") / group / f"{name}.yaml")._target_)


def pairs() -> list[tuple[str, str]]:
    """Every (domain, objective) of the registry that can train together (multissl.contracts.fits)."""
    from multissl.contracts import fits
    return [(d, o) for d in options("domain") for o in options("objective")
            if fits(option_class("domain", d), option_class("objective", o)) is None]


def fail(msg: str):
    print(f"multissl: error: {msg}", file=sys.stderr)
    sys.exit(2)


def usage() -> str:
    base = compose_raw([])
    lines = ["usage: python -m multissl.train [group=option …] [key=value …]",
             "       accelerate launch -m multissl.train domain=audio objective=byol", ""]
    for g in GROUPS:
        lines.append(f"  {g}=  {' | '.join(options(g))}")
    lines.append("")
    for section in ("data", "trainer", "optim", "ema", "run"):
        for k, v in base[section].items():
            lines.append(f"  {section}.{k}={v}")
    lines += ["", "Group options also take their own keys, e.g. domain.patch_size=4, objective.temperature=0.2.",
              "Run folder: config.yaml, metrics.jsonl, tb/, checkpoints/, encoder/ (multissl.load_encoder)."]
    return "\n".join(lines)


def compose_raw(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_module("multissl.configs", version_base=None):
        return compose("train", overrides=overrides, return_hydra_config=True)


def load_config(argv: list[str]):
    """The run's config from command-line style overrides (`["domain=audio", "objective=byol"]`): the registry's
    defaults composed with them, every key and choice checked (an unknown one is one line naming the
    valid ones, exit status 2), and `meta` holding the chosen options and the overrides (for the resume command)."""
    if any(a in ("-h", "--help") for a in argv):
        print(usage())
        sys.exit(0)
    for a in argv:
        if "=" not in a:
            fail(f"argument {a!r} is not key=value; see --help for the keys")
        key, value = a.split("=", 1)
        if key.lstrip("+~") in GROUPS and value not in options(key.lstrip("+~")):
            fail(f"unknown {key} {value!r}; choose one of: {', '.join(options(key.lstrip('+~')))}")
    try:
        cfg = compose_raw(list(argv))
    except Exception as e:  # Hydra/OmegaConf errors: reduce to the key that was wrong
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        bad = next((a.split("=")[0] for a in argv if a.split("=")[0].lstrip("+~") in msg), None)
        if bad and "." in bad:
            section = bad.lstrip("+~").rsplit(".", 1)[0]
            try:
                valid = ", ".join(OmegaConf.select(compose_raw([a for a in argv if not a.startswith(bad)]), section))
            except Exception:
                valid = "see --help"
            fail(f"unknown key {bad.lstrip('+~')}; valid keys under {section}: {valid}")
        fail(f"bad override: {msg}; see --help")
    choices_only = [a for a in argv if a.split("=")[0].lstrip("+~") in GROUPS]
    if len(choices_only) < len(argv):  # some key was overridden: compare it with its default
        check_types(cfg, compose_raw(choices_only))
    choices = cfg.hydra.runtime.choices
    with open_dict(cfg):
        meta = {**{g: choices[g] for g in GROUPS}, "overrides": list(argv)}  # overrides: the resume command
        del cfg["hydra"]
        cfg.meta = meta
    OmegaConf.set_struct(cfg, True)
    return cfg


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
            if want == "auto":
                ok = got == "auto" or isinstance(got, int) and not isinstance(got, bool) and got >= 0
                if not ok:
                    fail(f"{section}.{key} must be auto or a count of at least 0, got {got!r}")
            if not ok:
                kind = "a list" if isinstance(want, ListConfig) else type(want).__name__
                fail(f"{section}.{key} must be {kind} (like {want!r}), got {got!r}")
            if (section, key) in CHOICES and got not in CHOICES[section, key]:
                fail(f"{section}.{key}={got} is not one of: {', '.join(CHOICES[section, key])}")
