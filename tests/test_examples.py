"""Every script in examples/ runs (with tiny settings), so examples never drift from the code. Each runs as its own
`__main__` with its command-line arguments, in this process (a fresh interpreter would spend most of its seconds
importing what this one has)."""
import runpy
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
def test_example_runs(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # its runs/ folder
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3"))  # not a folder in /tmp
    monkeypatch.setattr(sys, "argv", [str(script), *LEADING.get(script.name, []), *TINY, *EXTRA.get(script.name, [])])
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err[-2000:]
    assert capsys.readouterr().out.strip(), "an example should print what it shows"
