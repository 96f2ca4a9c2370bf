"""Every results file (benchmarks/results/*.md: the measured tables the docs show) names the command that measured
it, the commit, the machine and the date; the writer puts them there."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
PROVENANCE = re.compile(r"^> \*\*command\*\* `[^`]+` · \*\*commit\*\* [0-9a-f]{7,}( \+ local changes| \(recorded [^)]+\))? · "
                        r"\*\*machine\*\* [^·]+ · \*\*date\*\* \d{4}-\d{2}-\d{2}$")
FILES = sorted((ROOT / "benchmarks" / "results").glob("*.md"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_results_file_names_its_command_and_commit(path):
    first = path.read_text().splitlines()[0]
    assert PROVENANCE.match(first), f"{path.name}: {first}"
    assert "|" in path.read_text(), f"{path.name} holds no table"
    commit = first.split("**commit** ")[1].split()[0]
    if (ROOT / ".git").exists():  # the commit is one of this repository's
        known = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT, capture_output=True)
        assert known.returncode == 0, f"{path.name}: commit {commit} is not in this repository"


def test_the_writer_heads_a_file_with_its_provenance(tmp_path):
    import results
    path = results.write(tmp_path / "x.md", "| a | b |\n| --- | --- |\n| 1 | 2 |", command="python benchmarks/x.py --n 3",
                         note="What was measured.")
    lines = path.read_text().splitlines()
    assert PROVENANCE.match(lines[0]) and "`python benchmarks/x.py --n 3`" in lines[0]
    assert lines[2] == "What was measured." and lines[-1] == "| 1 | 2 |"


def test_there_are_results_files():
    assert FILES
