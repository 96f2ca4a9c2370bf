"""Installs per domain: the core (engine, objectives, image, tabular, video from arrays) trains without any extra, and
a domain used without its extra is one line naming the install command. The extras' modules are blocked in a child
process, as a machine with only `pip install multissl` has them; multissl.errors.EXTRAS and pyproject.toml agree."""
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from multissl.errors import EXTRAS

ROOT = Path(__file__).parents[1]
# distribution name (pyproject.toml) -> import name (multissl.errors.EXTRAS)
MODULE = {"torchaudio": "torchaudio", "soundfile": "soundfile", "espeakng-loader": "espeakng_loader", "av": "av",
          "tokenizers": "tokenizers", "chatterbot-corpus": "chatterbot_corpus", "transformers": "transformers",
          "gymnasium": "gymnasium", "ale-py": "ale_py", "pygame-ce": "pygame", "stable-baselines3": "stable_baselines3",
          "minari": "minari", "litdata": "litdata", "onnx": "onnx", "onnxscript": "onnxscript",
          "onnxruntime": "onnxruntime", "timm": "timm"}
RUNTIME_EXTRAS = ("audio", "video", "text", "rl", "shards", "onnx", "timm")  # what `all` installs


def requirement_name(req: str) -> str:
    return req.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].split("~")[0].strip()


def test_the_extras_table_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = {MODULE[requirement_name(r)]: extra for extra in RUNTIME_EXTRAS for r in extras[extra]}
    assert declared == EXTRAS
    core = {requirement_name(r) for r in project["dependencies"]}
    assert not core & set(MODULE), "an extra's package is in the core"
    assert set(extras["all"][0].split("[")[1].rstrip("]").split(",")) == set(RUNTIME_EXTRAS)


CHILD = textwrap.dedent("""
    import contextlib, io, json, sys
    BLOCKED = set(json.loads(sys.argv[1]))

    for name in BLOCKED:  # as if `pip install multissl` had not installed them: importing one fails, and
        sys.modules[name] = None  # importlib.util.find_spec says None (torch._dynamo probes for onnx)
    from multissl.cli import load_config
    from multissl.train import execute
    for args in json.loads(sys.argv[2]):  # one run after another, each exit status and stderr reported
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                code = execute(load_config(args))
            except BaseException as e:
                code = repr(e)
        print(json.dumps({"code": code, "stderr": err.getvalue()}))
""")
TINY = ["encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "data.batch_size=16", "trainer.max_steps=1",
        "trainer.eval_samples=32", "trainer.baseline=false", "data.num_workers=0"]


def without_extras(tmp_path, runs: list[list[str]], plain: list[list[str]] = ()) -> list[dict]:
    """Each run (its key=value list, after TINY; `plain` ones as they are) in one child process where every extra's
    modules are missing."""
    import json
    import os
    runs = [[*TINY, f"run.dir={tmp_path / f'run{i}'}", *args] for i, args in enumerate(runs)] + list(plain)
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(list(EXTRAS)), json.dumps(runs)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "MULTISSL_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_the_core_trains_without_any_extra(tmp_path):
    domains = ["image", "tabular", "video"]
    for domain, got in zip(domains, without_extras(tmp_path, [[f"domain={d}"] for d in domains]), strict=True):
        assert got["code"] == 0, (domain, got["stderr"][-3000:])
    assert all((tmp_path / f"run{i}" / "encoder" / "model.safetensors").is_file() for i in range(len(domains)))


@pytest.mark.slow
def test_a_domain_without_its_extra_is_one_line_naming_the_install_command(tmp_path):
    """Also where the domain looks at the data to choose the encoder (no encoder key: the text domain reads its texts'
    lengths when the config is composed, and stops there)."""
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"\0" * 64)
    cases = [(["domain=audio"], "audio"), (["domain=text"], "text"), (["domain=rl", "domain.default.steps=1200"], "rl"),
             (["domain=text", "encoder=bert"], "text"), (["domain=video", f"data.path={tmp_path / 'clips'}"], "video")]
    choosing = ["domain=text", f"run.dir={tmp_path / 'choosing'}"]
    timm = ["encoder=timm", "encoder.name=resnet10t", *TINY[3:], f"run.dir={tmp_path / 'timm'}"]  # no transformer keys
    *ran, chose, timm_got = without_extras(tmp_path, [a for a, _ in cases], plain=[choosing, timm])
    codes = [2] * len(cases) + ["SystemExit(2)", 2]  # `choosing` stopped while its config was composed
    for (args, extra), got, code in zip([*cases, (choosing, "text"), (timm, "timm")], [*ran, chose, timm_got], codes,
                                        strict=True):
        lines = [x for x in got["stderr"].splitlines() if x.startswith("multissl: error")]
        assert got["code"] == code and "Traceback" not in got["stderr"], (args, got)
        assert len(lines) == 1 and f"pip install 'multissl[{extra}]'" in lines[0], (args, got["stderr"][-2000:])
