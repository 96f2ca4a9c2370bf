"""Suite records (benchmarks/records.py): every run's scores written beside a results file and read back by
--earlier, keys of every kind intact, a record of another suite refused."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from records import decode, encode, read_records, write_records  # noqa: E402


def test_scores_keyed_by_strings_numbers_and_tuples_come_back_as_written(tmp_path):
    runs = {("credit", "simclr", 0): {"trained": {("linear", 0.1): 0.8, ("gbdt", 1.0): 0.7},
                                      "untrained": {("linear", 0.1): 0.75, ("gbdt", 1.0): 0.71}},
            ("pendulum", "byol+domain.x=[1,2]", 1): {"trained": {0.01: 0.5, 1.0: 0.9},
                                                     "untrained": {0.01: 0.4, 1.0: 0.8}}}
    baseline = {"credit": {("linear", 0.1): 0.79}, "pendulum": {0.01: 0.3}}
    path = write_records(tmp_path / "suite.json", "tables", 500, runs, "python benchmarks/tables.py", "a note",
                         baseline)
    json.loads(path.read_text())  # plain JSON
    got, base, said = read_records(str(path), "tables", 500)
    assert got == runs and base == baseline
    assert said == [f"seed(s) 0, 1 read from suite.json (commit {json.loads(path.read_text())['commit']}; a note)"]
    assert decode(encode({"words": 1, "2": 2})) == {"words": 1, 2: 2}  # a numeral reads as a number


def test_the_first_record_that_holds_a_run_gives_it(tmp_path):
    a = write_records(tmp_path / "a.json", "text", 500, {("s", "default", 0): {"trained": 0.9}}, "cmd")
    b = write_records(tmp_path / "b.json", "text", 500, {("s", "default", 0): {"trained": 0.1},
                                                         ("s", "default", 1): {"trained": 0.2}}, "cmd")
    got, _, said = read_records(f"{a},{b}", "text", 500)
    assert got == {("s", "default", 0): {"trained": 0.9}, ("s", "default", 1): {"trained": 0.2}} and len(said) == 2
    got, _, said = read_records(f"{a},{b}", "text", 500, seeds=[1])  # the seeds asked for, and only those said
    assert got == {("s", "default", 1): {"trained": 0.2}} and said == ["seed(s) 1 read from b.json (commit "
                                                                      f"{json.loads(b.read_text())['commit']})"]


@pytest.mark.parametrize("suite, steps", [("audio", 500), ("text", 300)])
def test_a_record_of_another_suite_or_step_count_is_refused_in_one_line(tmp_path, suite, steps):
    path = write_records(tmp_path / "r.json", "text", 500, {("s", "default", 0): {"trained": 0.9}}, "cmd")
    with pytest.raises(SystemExit, match=r"r\.json records suite text at 500 steps, not .* give --earlier files"):
        read_records(str(path), suite, steps)


def test_a_record_is_data_its_keys_are_never_run(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"suite": "text", "steps": 500, "commit": "x", "note": "", "baseline": {},
                                "runs": [["s", "default", 0, {"__import__('os').getcwd()": 1.0}]]}))
    got, _, _ = read_records(str(path), "text", 500)
    assert got == {("s", "default", 0): {"__import__('os').getcwd()": 1.0}}  # kept as the string it is
