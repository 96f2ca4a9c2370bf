"""A built wheel (what a non-editable `pip install .` builds and installs) ships domains/, objectives/ and configs/
inside the multissl package with the extras declared, and the main job runs from another directory."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_wheel_install_runs_main_job_elsewhere(tmp_path):
    target, work, src = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "src"
    work.mkdir()
    # built from a copy: setuptools leaves build/ in the source tree, whose stale files a later build would ship
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "runs", "*.egg-info",
                                                             "__pycache__", ".pytest_cache"))
    wheels = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("multissl-*.whl")  # the built wheel, as `pip install .` builds and installs it
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert {f"Provides-Extra: {e}" for e in ("audio", "video", "text", "rl", "all", "docs", "dev")} <= set(
        meta.splitlines())
    assert "Requires-Dist: torchaudio" in meta and "torchaudio" not in meta.split("Provides-Extra")[0]  # an extra
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                            str(wheel)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-2000:]
    for sub in ("domains/image/domain.py", "domains/audio/domain.py", "domains/rl/domain.py", "domains/rl/collect.py",
                "domains/tabular/domain.py", "objectives/simclr.py", "configs/train.yaml",
                "configs/objective/mae.yaml", "configs/domain/audio.yaml", "configs/domain/rl.yaml"):
        assert (target / "multissl" / sub).exists(), sub
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import multissl; print(multissl.__file__)"], env=env, cwd=work,
                           capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    # the README's headline job, through `accelerate launch` (as `python -m`, so the venv's own accelerate runs)
    job = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                          "-m", "multissl.train", "domain=audio", "objective=byol",
                          "trainer.max_steps=2", "data.batch_size=32", "encoder.dim=16", "encoder.depth=1",
                          "encoder.heads=2", "run.dir=run"],
                         env=env, cwd=work, capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-2000:]
    assert (work / "run" / "encoder" / "model.safetensors").exists()
    assert "domain: audio" in (work / "run" / "config.yaml").read_text()  # the overrides reached the job
