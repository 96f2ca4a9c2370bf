"""examples/plugin installed as a user installs a package, then used only through multissl's front doors in fresh
processes: trained by its entry-point names and by module:Class, listed by --help, its export opened by load_encoder,
`multissl.evaluate` and `multissl.report`, and checked with multissl.testing in one line each."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugin"
TINY = ["trainer.max_steps=3", "trainer.eval_every=0", "trainer.log_every=1", "trainer.baseline=false",
        "trainer.eval_samples=128", "data.num_workers=0", "data.batch_size=32"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """The package installed into a folder of its own (pip --target: the test's venv is left as it is), on PYTHONPATH."""
    root = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PLUGIN, root / "source", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(root / "site"), str(source)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(root / "site"), "OMP_NUM_THREADS": "1"}
    return {"root": root, "env": env}


def call(site, *args, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *args], cwd=site["root"], env=site["env"], capture_output=True, text=True,
                         timeout=300)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_installed_plugin_trains_by_name_and_its_export_opens_everywhere(site):
    assert "sensors" in call(site, "-m", "multissl.train", "--help").stdout
    run = site["root"] / "by_name"
    call(site, "-m", "multissl.train", "domain=sensors", "objective=spectral_contrastive", "encoder=conv1d", *TINY,
         f"run.dir={run}")
    meta = json.loads((run / "encoder" / "config.json").read_text())
    assert meta["domain"]["_target_"] == "multissl_sensors.domain.SensorDomain"
    embedded = call(site, "-c", "import multissl, torch; e = multissl.load_encoder(%r); "
                                "print(tuple(e.embed(torch.randn(4, 3, 128)).shape))" % str(run)).stdout
    assert embedded.strip() == "(4, 64)"
    metrics = json.loads(call(site, "-m", "multissl.evaluate", str(run)).stdout)
    assert 0 <= metrics["knn_acc"] <= 1
    call(site, "-m", "multissl.report", str(run))
    assert (run / "report" / "index.html").is_file()


def test_module_class_form_and_masked_modelling_on_the_plugin_domain(site):
    run = site["root"] / "by_class"
    out = call(site, "-m", "multissl.train", "domain=multissl_sensors.domain:SensorDomain", "objective=mae",
               "encoder.dim=16", "encoder.depth=1", "encoder.heads=2", "domain.mask_span=4", *TINY, f"run.dir={run}")
    assert "domain=multissl_sensors.domain:SensorDomain" in (run / "config.yaml").read_text()
    assert "multissl: done" in out.stderr
    bad = call(site, "-m", "multissl.train", "domain=multissl_sensors.domain:SensorDomain", "domain.nope=1",
               check=False)
    assert bad.returncode == 2 and "unknown key domain.nope" in bad.stderr and bad.stderr.count("\n") == 1


def test_multissl_testing_checks_the_plugin_in_one_line_each(site):
    call(site, "-c", "from multissl.testing import check_domain, check_encoder, check_objective\n"
                     "check_domain('sensors', parity=False)\n"
                     "check_objective('spectral_contrastive', domain='sensors', parity=False)\n"
                     "check_encoder('conv1d', domain='sensors', objective='spectral_contrastive', parity=False)")
