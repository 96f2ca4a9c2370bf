"""Results files: every table of measured figures the docs show is a Markdown file in benchmarks/results/, written by
the command that measured it, and headed by its provenance — the command, the commit, the machine and the date — so
a reader can tell a stale figure and reproduce any. The docs include the files as they are
(`--8<-- "benchmarks/results/<name>.md"`); tests/test_results.py checks that every file names its command and commit.
Tables measured before results files existed carry `(recorded in the README)` after their commit: transcribed, until
their command is run again.

    from results import write
    write("photos", "python benchmarks/photos.py", table, note="...")
"""
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
RESULTS = Path(__file__).with_name("results")


def commit() -> str:
    """The short commit the code ran at, with "+ local changes" when the tree differs from it."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results")
    return f"{head} + local changes" if dirty else head


def machine() -> str:
    import torch
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores ({cpu}), {gpu}, torch {torch.__version__}"


def provenance(command: str) -> str:
    return (f"> **command** `{command}` · **commit** {commit()} · **machine** {machine()} · "
            f"**date** {time.strftime('%Y-%m-%d')}")


def command_line(script, argv: list[str] | None = None) -> str:
    """The shell command that runs `script` (a benchmark's __file__) with argv (default: this process's)."""
    script = Path(script).resolve()
    script = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join(["python", str(script), *(sys.argv[1:] if argv is None else argv)])


def add_argument(parser):
    """--results: the folder a benchmark writes its results files to (tests: a temporary one)."""
    parser.add_argument("--results", default=str(RESULTS), help="folder of the results files (default: %(default)s)")


def write(target, table: str, command: str | None = None, note: str = "") -> Path:
    """benchmarks/results/<target>.md (or the path `target` when it has a suffix: a test's folder): the provenance
    line, the note (what was measured, the bar set before measuring), then the table (Markdown)."""
    path = Path(target) if Path(target).suffix else RESULTS / f"{target}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [provenance(command or command_line(sys.argv[0])), note.strip(), table.strip()]
    path.write_text("\n\n".join(p for p in parts if p) + "\n")
    print(f"results: wrote {path}", file=sys.stderr)
    return path
