"""Suite records: every run's scores as JSON beside the suite's results file (results/<name>.json next to <name>.md), so
that a suite can be completed over several sittings: `--earlier <json,...>` reads the (part, arm, seed) runs a record
holds instead of training them again, and the results file says which runs came from where.

    write_records(path, "tables", 500, runs, command, baseline=raw)
    runs, baseline, said = read_records("results/tables-suite.json", "tables", 500)

`runs` maps (part, arm, seed) to that run's scores, `baseline` maps a part to the obvious baseline's scores (no seed);
scores are dicts, possibly nested, keyed by strings, numbers or tuples of them. A record is data: its keys are read
back with `ast.literal_eval`, which evaluates literals only.
"""
import ast
import json
import sys
from pathlib import Path

from results import commit


def encode(value):
    """Scores -> JSON: dict keys that are not strings are written as their Python literal ("('linear', 0.1)", "0.1")."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else repr(k): encode(v) for k, v in value.items()}
    return value


def decode(value):
    """encode's inverse: a key that reads as a number or a tuple literal is one; any other key stays a string."""
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        try:
            key = ast.literal_eval(k)
        except (ValueError, SyntaxError):
            key = k
        out[key if isinstance(key, (int, float, tuple)) else k] = decode(v)
    return out


def write_records(path: Path, suite: str, steps: int, runs: dict, command: str, note: str = "",
                  baseline: dict | None = None) -> Path:
    """The record of a suite's invocation: what it ran (suite, steps, commit, command, note), every run's scores and
    the baseline's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(
        {"suite": suite, "steps": steps, "commit": commit(), "command": command, "note": note,
         "runs": [[p, a, s, encode(v)] for (p, a, s), v in runs.items()], "baseline": encode(baseline or {})},
        indent=1))
    return path


def read_records(files: str | None, suite: str, steps: int,
                 seeds: list[int] | None = None) -> tuple[dict, dict, list[str]]:
    """Comma-separated record files of earlier invocations -> ({(part, arm, seed): scores}, {part: baseline scores},
    a line per file saying which of its runs are read and where they came from), only the runs of `seeds` when given.
    The first file that holds a run gives it; a file of another suite or step count is refused (one line, exit 1)."""
    runs, baseline, said = {}, {}, []
    for f in files.split(",") if files else []:
        rec = json.loads(Path(f).read_text())
        if rec.get("suite") != suite or rec.get("steps") != steps:
            sys.exit(f"{f} records suite {rec.get('suite')} at {rec.get('steps')} steps, not {suite} at {steps}; "
                     f"give --earlier files of this suite")
        got = {(p, a, s): decode(v) for p, a, s, v in rec["runs"] if seeds is None or s in seeds}
        runs.update({k: v for k, v in got.items() if k not in runs})
        baseline.update({k: v for k, v in decode(rec.get("baseline", {})).items() if k not in baseline})
        if got:
            held = ", ".join(map(str, sorted({s for _, _, s in got})))
            said.append(f"seed(s) {held} read from {Path(f).name} (commit {rec['commit']}"
                        f"{'; ' + rec['note'] if rec.get('note') else ''})")
    return runs, baseline, said
