"""Files from someone else are data (multissl.registry): an exported encoder's config.json and a run folder's
config.yaml build only classes multissl knows, every `_target_` checked — nested ones too — before anything is built;
a refused file is one line naming the target and the file, and nothing in it ran. HF datasets load offline."""
import json
import pickle
import shlex
import subprocess
import sys

import pytest
import torch
import yaml
from omegaconf import OmegaConf

import multissl
from multissl import registry
from multissl.domains.image import ImageDomain
from multissl.encoder import Encoder
from multissl.errors import UserError
from multissl.evaluate import evaluate_run
from multissl.export import load_encoder, save_encoder
from multissl.report import report

DOMAIN = {"_target_": "multissl.domains.image.ImageDomain"}
ENCODER = {"_target_": "multissl.encoder.Encoder", "dim": 16, "depth": 1, "heads": 2}


class Touch:
    """Unpickling it creates the marker file: what pandas.read_pickle of a planted payload would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return subprocess.run, (["touch", str(self.marker)],)


def payloads(tmp_path):
    """Targets that run code when a config is instantiated, each touching the marker if it ever runs."""
    marker = tmp_path / "ran"
    pkl = tmp_path / "payload.pkl"
    pkl.write_bytes(pickle.dumps(Touch(marker)))
    return marker, {
        "pandas.read_pickle": {"_target_": "pandas.read_pickle", "filepath_or_buffer": str(pkl)},
        "subprocess.run": {"_target_": "subprocess.run", "args": ["touch", str(marker)]},
        "builtins.exec": {"_target_": "builtins.exec", "_args_": [f"open({str(marker)!r}, 'w')"]},
        "os.system": {"_target_": "os.system", "command": f"touch {shlex.quote(str(marker))}"},
    }


def plant(tree: dict, where: str, payload: dict) -> dict:
    """tree with payload put at a dotted place (a number indexes a list); the place is created as needed."""
    tree = json.loads(json.dumps(tree))
    *path, last = where.split(".")
    node = tree
    for k in path:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    if isinstance(node, list):
        node[int(last)] = payload
    elif last == "_target_":  # the group's own class replaced
        node.clear()
        node.update(payload)
    else:
        node[last] = payload
    return tree


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A real export of an untrained image encoder (no training needed to test opening it)."""
    folder = tmp_path_factory.mktemp("run")
    domain = ImageDomain()
    domain.dataset("train")
    encoder = Encoder(domain, dim=16, depth=1, heads=2)
    save_encoder(folder / "encoder", encoder, OmegaConf.create(DOMAIN), OmegaConf.create(ENCODER), domain.state())
    return folder


PLACES = ["domain._target_", "domain.crop_scale", "domain.deeper.list.0", "encoder._target_", "encoder.extra.more",
          "preprocess.mean", "payload"]


def test_a_real_export_opens(export):
    enc = load_encoder(export)
    assert enc.embed(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)).shape == (2, 16)


@pytest.mark.parametrize("where", PLACES)
def test_config_json_with_a_planted_target_is_refused_and_nothing_runs(export, tmp_path, where):
    marker, found = payloads(tmp_path)
    meta = json.loads((export / "encoder" / "config.json").read_text())
    for name, payload in found.items():
        bad = tmp_path / name / "encoder"
        bad.mkdir(parents=True)
        (bad / "model.safetensors").write_bytes((export / "encoder" / "model.safetensors").read_bytes())
        (bad / "config.json").write_text(json.dumps(plant(meta, where, payload)))
        with pytest.raises(UserError) as e:
            load_encoder(bad.parent)
        assert f"'{name}'" in str(e.value) and str(bad / "config.json") in str(e.value) and "\n" not in str(e.value)
        assert not marker.exists(), f"{name} at {where} ran"


def run_folder(export, tmp_path, cfg: dict):
    folder = tmp_path / "run"
    (folder / "encoder").mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        (folder / "encoder" / f).write_bytes((export / "encoder" / f).read_bytes())
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    return folder


@pytest.mark.parametrize("where", ["objective._target_", "objective.temperature", "domain.deeper.0", "data.path",
                                   "trainer"])
def test_config_yaml_with_a_planted_target_is_refused_by_evaluate_and_report(export, tmp_path, where):
    marker, found = payloads(tmp_path)
    base = {"domain": DOMAIN, "encoder": ENCODER, "objective": {"_target_": "multissl.objectives.simclr.SimCLR"},
            "data": {"path": None}, "trainer": {"eval_samples": 64}, "meta": {"domain": "image"}}
    for name, payload in found.items():
        folder = run_folder(export, tmp_path / name, plant(base, where, payload))
        for open_it in (lambda: evaluate_run(folder), lambda: report([folder])):
            with pytest.raises(UserError) as e:
                open_it()
            assert f"'{name}'" in str(e.value) and str(folder / "config.yaml") in str(e.value)
        assert not marker.exists(), f"{name} at {where} ran"


def test_the_command_line_tools_refuse_in_one_line(export, tmp_path):
    marker, found = payloads(tmp_path)
    folder = run_folder(export, tmp_path, {"objective": found["os.system"], "data": {}})
    for tool in ("multissl.evaluate", "multissl.report"):
        out = subprocess.run([sys.executable, "-m", tool, str(folder)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and "'os.system'" in out.stderr, out.stderr
    assert not marker.exists()


def test_the_export_format_is_checked(export, tmp_path):
    meta = json.loads((export / "encoder" / "config.json").read_text())
    for fmt in ("something-else/1", None):
        bad = tmp_path / str(fmt) / "encoder"
        bad.mkdir(parents=True)
        (bad / "model.safetensors").write_bytes((export / "encoder" / "model.safetensors").read_bytes())
        (bad / "config.json").write_text(json.dumps({**meta, "format": fmt}))
        with pytest.raises(UserError, match="is not a multissl encoder export"):
            load_encoder(bad)


class MyDomain(ImageDomain):
    """A user's own domain class."""


def test_a_class_a_user_registered_opens(tmp_path):
    domain = MyDomain()
    domain.dataset("train")
    target = {"_target_": registry.class_path(MyDomain)}
    save_encoder(tmp_path / "encoder", Encoder(domain, dim=8, depth=1, heads=2), OmegaConf.create(target),
                 OmegaConf.create({**ENCODER, "dim": 8}), domain.state())
    with pytest.raises(UserError, match="not a class multissl knows"):
        load_encoder(tmp_path)
    multissl.register(MyDomain)
    assert isinstance(load_encoder(tmp_path).domain, MyDomain)


def test_hf_names_load_from_the_local_cache_only(monkeypatch):
    """hf:<name> never reaches the hub: the load runs with HF's offline mode on, and a name missing from the cache is
    one line saying how to fill it."""
    import datasets
    import huggingface_hub.constants as hub

    from multissl.domains.files import hf_splits
    seen = []

    def load(name):
        seen.append((name, hub.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE))
        return datasets.Dataset.from_dict({"x": [1, 2]})
    monkeypatch.setattr(datasets, "load_dataset", load)
    assert len(hf_splits("someone/data", from_disk=False)["train"]) == 2
    assert seen == [("someone/data", True, True)] and hub.HF_HUB_OFFLINE is False
    monkeypatch.undo()
    with pytest.raises(UserError, match=r"reads only the local cache: fill it once"):
        hf_splits("someone/not-cached", from_disk=False)


def test_relaunching_into_a_run_folder_with_planted_targets_builds_nothing_from_it(tiny, tmp_path):
    """Resume reads a run folder's checkpoint (weights only) and its config.yaml's choices as data: the classes come
    from the command line, never from the folder."""
    marker, found = payloads(tmp_path)
    folder = tiny.root / "run"
    folder.mkdir()
    planted = {"meta": {"domain": "image", "objective": "simclr"}, "domain": found["subprocess.run"],
               "objective": found["os.system"], "encoder": found["builtins.exec"]}
    (folder / "config.yaml").write_text(yaml.safe_dump(planted))
    tiny.run("trainer.max_steps=1")
    assert not marker.exists()
