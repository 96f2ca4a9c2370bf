"""Every script in examples/ runs (with tiny settings), so examples never drift from the code."""
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))
TINY = ["trainer.max_steps=2", "data.batch_size=32", "encoder.dim=16", "encoder.depth=1", "encoder.heads=2",
        "trainer.eval_every=0", "trainer.eval_samples=256"]
LEADING = {"rl_ppo.py": ["ppo_steps=256"]}  # one PPO rollout and update instead of eight
EXTRA = {"rl_ppo.py": ["domain.default.steps=1200"]}  # the tests' smaller default buffer (tests/tiny.py)


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script, tmp_path):
    args = [*LEADING.get(script.name, []), *TINY, *EXTRA.get(script.name, [])]
    out = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1",
                              "SB3_LOGDIR": str(tmp_path / "sb3")})  # not a folder in /tmp
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip(), "an example should print what it shows"
