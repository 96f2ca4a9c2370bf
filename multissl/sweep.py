"""`python -m multissl.train -m objective=simclr,byol trainer.seed=0,1,2` — a sweep (Hydra's multirun): one run per
combination of the comma-separated values, each in its own folder under the sweep folder, then a summary there.

Hydra's own override parser and basic sweeper expand the command, so `range(…)`, `choice(…)`, quoting and escaping
mean what they mean in Hydra. Every combination is composed and checked before the first run starts. The runs go one
after another in this process, or through the Hydra launcher plugin that `hydra/launcher=<name>` names. Relaunching
the same command with the same run.dir skips the runs that finished and resumes the others."""
import hashlib
import inspect
import json
import os
import re
import shlex
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from multissl.cli import compose_config, config_dir_args, load_config
from multissl.errors import UserError, reason
from multissl.runlog import evaluated, read_rows

SEED = "trainer.seed"
# a launcher plugin runs Hydra's job machinery: multissl owns the run folder (no .hydra/, no job log, no chdir)
LAUNCHER_SETTINGS = ("hydra.job.chdir=false", "hydra.output_subdir=null", "hydra/job_logging=none",
                     "hydra/hydra_logging=none")
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/extended/"


@dataclass
class Job:
    """One combination: its swept choices (key -> value as Hydra spells it), its overrides, folder and config."""
    choices: dict
    argv: list
    folder: Path
    cfg: object = None
    status: str = "not run"  # ran | finished earlier | failed | stopped | not run
    code: int | None = None

    @property
    def name(self) -> str:
        return self.folder.name


def main_process() -> bool:
    """Under `accelerate launch` every process runs the same sweep in step; one of them speaks and writes."""
    return os.environ.get("RANK", "0") == "0"


def say(line: str):
    if main_process():
        print(f"multissl: sweep: {line}", file=sys.stderr)


def parse(overrides: list[str]) -> list:
    """Hydra's Override of each argument, or a UserError naming the one it cannot read."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    parser, out = OverridesParser.create(), []
    for a in overrides:
        try:
            out += parser.parse_overrides([a])
        except HydraException as e:
            raise UserError(f"cannot read the override {a!r}: {reason(e)}; see {GRAMMAR}") from None
    return out


def plain(item: str) -> str:
    """A combination's `key=value` with the value unescaped when that reads back the same (`objective=pkg:Cls`,
    not Hydra's `objective=pkg\\:Cls`), so the CLI's own checks and the folder names see what the user typed."""
    key, _, value = item.partition("=")
    raw = parse([item])[0].value()
    if isinstance(raw, str) and "\\" in value:
        try:
            again = parse([f"{key}={raw}"])[0]
        except UserError:
            return item
        if not again.is_sweep_override() and again.value() == raw:
            return f"{key}={raw}"
    return item


def combinations(parsed: list) -> tuple[list[str], list[list[str]]]:
    """(the keys as typed, one `key=value` list per combination, in that order) for task overrides, expanded by
    Hydra's basic sweeper: the command's last key varies fastest."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.errors import HydraException
    try:
        [combos] = BasicSweeper.split_arguments(parsed, None)
    except HydraException as e:  # a sweep it cannot list, like interval(…)
        raise UserError(f"{reason(e)}; a sweep lists its values: a,b,c, range(…) or choice(…)") from None
    keys = list(dict.fromkeys(o.get_key_element() for o in parsed))
    return keys, [[plain(item) for item in combo] for combo in combos]


def folder_names(combos: list[dict]) -> list[str]:
    """A folder name per combination: its swept choices, `objective=byol,trainer.seed=1`, with every character that
    a file name (or a shell) may trip on replaced by `_`. A name that would be too long, or would be another's, is
    cut or marked with a hash of the choices."""
    full = [",".join(f"{k}={v}" for k, v in c.items()) for c in combos]
    names = [re.sub(r"[^A-Za-z0-9_.=,+~@%-]+", "_", f) or "run" for f in full]
    tag = [hashlib.sha1(f.encode()).hexdigest()[:8] for f in full]
    return [f"{n[:110]}-{t}" if len(n) > 120 or names.count(n) > 1 else n for n, t in zip(names, tag)]


def split_hydra(parsed: list) -> tuple[list, list[str]]:
    """(the task overrides, the launcher's): `hydra/launcher=<name>` and its `hydra.launcher.<key>=…`; any other
    Hydra setting is refused (multissl owns the run folder and the logs)."""
    launcher = [o for o in parsed if o.is_hydra_override()]
    for o in launcher:
        if o.is_sweep_override():
            raise UserError(f"{o.input_line}: Hydra's own settings cannot be swept; give one value")
        if o.key_or_group != "hydra/launcher" and not o.key_or_group.startswith("hydra.launcher."):
            raise UserError(f"{o.input_line}: the only Hydra settings a sweep takes are hydra/launcher=<name> and "
                            f"hydra.launcher.<key>=…; multissl names the folders (run.dir=<sweep folder>)")
    if launcher and not any(o.key_or_group == "hydra/launcher" for o in launcher):
        raise UserError(f"{launcher[0].input_line} sets a launcher's option, but no launcher is named; add "
                        f"hydra/launcher=<name>")
    return [o for o in parsed if not o.is_hydra_override()], [o.input_line for o in launcher]


def sweep_folder(task: list) -> Path:
    """run.dir on a -m command names the sweep folder (default runs/sweep-<time>)."""
    for o in task:
        if o.key_or_group == "trainer.resume":
            raise UserError(f"{o.input_line}: a sweep resumes by itself; relaunch the same -m command with the "
                            f"same run.dir=<sweep folder>")
        if o.key_or_group == "run.dir" and o.is_sweep_override():
            raise UserError(f"{o.input_line}: run.dir names the sweep folder on a -m command; give one")
    given = [o.value() for o in task if o.key_or_group == "run.dir"]
    return Path(given[-1] if given and given[-1] is not None else f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}")


def plan(argv: list[str]) -> tuple[Path, list[Job], list[str]]:
    """(the sweep folder, every combination composed and checked, the launcher's overrides). A bad override in any
    combination ends the sweep here, before any run starts (one line, exit status 2)."""
    overrides = config_dir_args(list(argv))
    dir_args = [a for a in argv if a not in overrides]  # --config-dir DIR: passed on to every run
    task, launcher = split_hydra(parse(overrides))
    folder = sweep_folder(task)
    swept = {o.get_key_element() for o in task if o.is_sweep_override()}
    keys, combos = combinations([o for o in task if o.key_or_group != "run.dir"])
    choices = [{k: item.partition("=")[2] for k, item in zip(keys, combo) if k in swept} for combo in combos]
    twice = next((c for i, c in enumerate(choices) if c in choices[:i]), None)
    if twice is not None:
        raise UserError(f"the sweep lists {','.join(f'{k}={v}' for k, v in twice.items())} twice (a value given "
                        f"twice); give each value once")
    names = folder_names(choices)
    jobs = [Job(c, [*dir_args, *combo], folder / name) for c, combo, name in zip(choices, combos, names)]
    for job in jobs:
        try:
            job.cfg = compose_config(job.argv)
        except UserError as e:
            raise UserError(f"{job.name}: {e}; no run was started") from None
        job.cfg.run.dir = str(job.folder)
    return folder, jobs, launcher


def finished(job: Job) -> bool:
    """The run reached its last step, exported its encoder and logged its final evaluation."""
    return evaluated(job.folder, job.cfg.trainer.max_steps)


def run_here(jobs: list[Job]):
    """One run after another in this process; a run that fails is marked and the next one starts. A stop signal
    (the run saved its checkpoint) stops the sweep."""
    from multissl.train import execute
    for i, job in enumerate(jobs, 1):
        say(f"run {i}/{len(jobs)}: {job.folder}")
        try:
            job.code = execute(job.cfg)
        except Exception:  # a crash of one run, whatever it is, is that run's failure: the others still run
            traceback.print_exc()
            job.code = 1
        if job.code >= 128:  # a stop signal: the run saved its checkpoint (128 + signal); the sweep stops too
            job.status = "stopped"
            raise SystemExit(job.code)
        job.status = "ran" if job.code == 0 else "failed"


class Task:
    """What a launcher runs for one job: the run its subfolder names, composed before the sweep started (so a
    launcher's worker process composes nothing and takes the config as data)."""

    def __init__(self, cfgs: dict):
        self.cfgs = cfgs

    def __call__(self, _cfg) -> int:
        from hydra.core.hydra_config import HydraConfig

        from multissl.train import execute
        return execute(self.cfgs[HydraConfig.get().sweep.subdir])


def quoted(text) -> str:
    """A value for Hydra's override grammar whatever it holds: single-quoted, with its quotes (and the backslashes
    before them, or at the end) escaped."""
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", str(text))
    return "'" + re.sub(r"(\\+)$", r"\1\1", text) + "'"


def launcher_setup(launcher: list[str], folder: Path):
    """(Hydra's context, the launcher's config) through the compose API: the config `hydra/launcher=<name>` picks
    with the sweep folder as hydra.sweep.dir. An uninstalled launcher or a bad option is one line."""
    from hydra import compose, initialize_config_module
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import HydraContext
    name = [o.partition("=")[2] for o in launcher if o.startswith("hydra/launcher=")][-1]
    GlobalHydra.instance().clear()
    with initialize_config_module("multissl.configs", version_base=None):
        loader = GlobalHydra.instance().config_loader()
        installed = loader.get_group_options("hydra/launcher")
        if name not in installed:
            raise UserError(f"hydra/launcher={name} is not installed (installed: {', '.join(installed)}); install "
                            f"its Hydra plugin (hydra-{name}-launcher), or leave hydra/launcher out to run one "
                            f"run after another")
        try:
            config = compose("train", overrides=[*launcher, *LAUNCHER_SETTINGS, f"hydra.sweep.dir={quoted(folder)}"],
                             return_hydra_config=True)
        except Exception as e:
            raise UserError(f"hydra/launcher={name}: {reason(e)}") from None
    return HydraContext(config_loader=loader, callbacks=Callbacks(config)), config


def run_launched(jobs: list[Job], context, config):
    """The runs through the launcher plugin (Hydra's Plugins API): each job is its subfolder's name; a run that
    raised is marked failed, with its traceback and its error's line."""
    from hydra.core.plugins import Plugins
    from hydra.core.utils import JobStatus
    launcher = Plugins.instance().instantiate_launcher(hydra_context=context, task_function=Task(
        {j.name: j.cfg for j in jobs}), config=config)
    say(f"{len(jobs)} run(s) through hydra/launcher={config.hydra.runtime.choices['hydra/launcher']}")
    results = launcher.launch([[f"hydra.sweep.subdir={quoted(j.name)}"] for j in jobs], initial_job_idx=0)
    for job, result in zip(jobs, results):
        if result.status == JobStatus.FAILED:  # the exception itself (return_value would raise it)
            error = result._return_value
            traceback.print_exception(error)
            print(f"multissl: error: {job.name}: {reason(error)}", file=sys.stderr)
            job.code = 1
        else:
            job.code = result.return_value
        job.status = "ran" if job.code == 0 else "failed"


def headline(job: Job) -> tuple[str, bool]:
    """The domain's headline metric (its `headline`, as multissl.baseline reads it) and whether higher is better; a
    domain that decides it from its data (a property: tables, by whether the target is a class) is asked as the
    run's export rebuilds it."""
    from hydra.utils import get_class

    from multissl.contracts import Downstream, optional
    from multissl.export import load_encoder
    cls = get_class(job.cfg.domain._target_)
    member = inspect.getattr_static(cls, "headline", None)
    owner = cls if isinstance(member, (tuple, list, type(None))) else load_encoder(job.folder).domain
    key, higher, _ = optional(owner, Downstream, "headline")
    return key, bool(higher)


def run_entry(job: Job) -> dict:
    """A run as the summary lists it: its choices, how it ended, its final headline metric and the untrained
    encoder's (`untrained/<metric>`, logged with trainer.baseline=true)."""
    entry = {"name": job.name, "folder": str(job.folder), "choices": job.choices, "status": job.status,
             "exit": job.code, "metric": None, "higher_is_better": None, "value": None, "untrained": None}
    path = job.folder / "metrics.jsonl"
    if job.status in ("ran", "finished earlier") and path.is_file():
        key, higher = headline(job)
        final = ([r for r in read_rows(path, say=False) if key in r] or [{}])[-1]
        entry |= {"metric": key, "higher_is_better": higher, "value": final.get(key),
                  "untrained": final.get(f"untrained/{key}")}
    return entry


def summarize(jobs: list[Job], folder: Path, argv: list[str]) -> dict:
    """One row per combination of the choices other than the seed (trainer.seed; without it every run is a row):
    the headline metric's mean and sample standard deviation over the seeds that gave one, the untrained encoders'
    mean, the number of those seeds and of failed runs; each row lists its runs."""
    groups = {}
    for job in jobs:
        label = tuple((k, v) for k, v in job.choices.items() if k.lstrip("+~") != SEED)
        groups.setdefault(label, []).append(run_entry(job))
    rows = []
    for label, runs in groups.items():
        got = [r for r in runs if r["value"] is not None]
        values, base = [r["value"] for r in got], [r["untrained"] for r in got if r["untrained"] is not None]
        rows.append({"choices": dict(label), "metric": got[0]["metric"] if got else None,
                     "higher_is_better": got[0]["higher_is_better"] if got else None,
                     "mean": statistics.fmean(values) if values else None,
                     "sd": statistics.stdev(values) if len(values) > 1 else None,
                     "untrained_mean": statistics.fmean(base) if base else None, "seeds": len(values),
                     "failed": sum(r["status"] == "failed" for r in runs), "runs": runs})
    failed = [r for row in rows for r in row["runs"] if r["status"] == "failed"]
    return {"sweep": str(folder), "command": shlex.join(["python", "-m", "multissl.train", "-m", *argv]),
            "rows": rows, "failed": [r["name"] for r in failed]}


def number(x, sd=None) -> str:
    return "—" if x is None else f"{x:.4f}" + ("" if sd is None else f" ± {sd:.4f}")


def cell(text: str) -> str:
    return text.replace("|", "\\|")  # a choice's value may hold the table's separator


def markdown(summary: dict) -> str:
    lines = [f"# Sweep {summary['sweep']}", "", f"`{summary['command']}`", "",
             "| choices | metric | trained: mean ± sd | untrained: mean | seeds | failed |",
             "|---|---|---|---|--:|--:|"]
    for row in summary["rows"]:
        metric = "—" if row["metric"] is None else f"{row['metric']} {'↑' if row['higher_is_better'] else '↓'}"
        choices = " ".join(f"{k}={v}" for k, v in row["choices"].items()) or "(every run)"
        lines.append(f"| {cell(choices)} | {cell(metric)} | {number(row['mean'], row['sd'])} | "
                     f"{number(row['untrained_mean'])} | {row['seeds']} | {row['failed']} |")
    lines += ["", ("Per row, over its seeds (trainer.seed): the domain's headline held-out metric at the end "
                   "(↑ higher, ↓ lower is better), mean ± sample standard deviation; untrained: the same seeds' "
                   "encoders before training (trainer.baseline=true).")]
    failed = [r for row in summary["rows"] for r in row["runs"] if r["status"] == "failed"]
    if failed:
        names = ", ".join(f"{r['name']} (exit {r['exit']})" for r in failed)
        lines += ["", f"Failed (each run's output says why; relaunch the same command to retry them): {names}."]
    return "\n".join(lines) + "\n"


def write_summary(summary: dict, folder: Path) -> str:
    """summary.json and summary.md in the sweep folder; returns the markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    text = markdown(summary)
    (folder / "summary.md").write_text(text, encoding="utf-8")
    return text


def main(argv: list[str]) -> int:
    """The sweep as a command: its exit status (0 when every run finished, 1 when one failed, 2 on bad input)."""
    if any(a in ("-h", "--help") for a in argv):
        load_config(argv)  # prints the usage and exits
    try:
        folder, jobs, launcher = plan(argv)
        context = launcher_setup(launcher, folder) if launcher else None
    except UserError as e:
        print(f"multissl: error: {e}", file=sys.stderr)
        return 2
    todo = []
    for job in jobs:
        if finished(job):
            job.status = "finished earlier"
            say(f"{job.name}: finished earlier, skipped (delete its folder to run it again)")
        else:
            todo.append(job)
    say(f"{len(jobs)} run(s) in {folder} ({len(todo)} to run); relaunch with run.dir={folder} to resume")
    try:
        if context is not None and todo:
            run_launched(todo, *context)
        else:
            run_here(todo)
    finally:  # also when a stop signal ends the sweep: the summary of what ran, written once
        if main_process():
            print(write_summary(summarize(jobs, folder, argv), folder))
    return 1 if any(j.status == "failed" for j in jobs) else 0
