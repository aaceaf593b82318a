"""The golden run (scripts/golden_run.py): the study's engine still computes what the study computed.

On the kind of CPU the record was made on, every run must match bit for bit; on another, the warm-up episodes
exactly and the first losses within float32 tolerance. A mismatch names the results computed with the old
numerics (the record's ``results``), so a change that moves numerics says which results predate it."""

from __future__ import annotations

import copy
import json

import pytest

from tests.conftest import load_script

golden = load_script("golden_run")


@pytest.fixture(scope="module")
def runs():
    return golden.run_all()


def test_the_engine_computes_what_the_record_holds(runs):
    data = json.loads(golden.RECORD.read_text())
    records = golden.records_of(data)
    assert set(runs) == {f"{s}:{v}" for s in golden.SUITES for v in golden.VARIANTS}  # every study variant
    mine = [r for r in records if r["cpu"] == golden.cpu_kind()]
    record = mine[0] if mine else records[0]
    assert golden.differences(record["runs"], runs, bool(mine)) == [], (
        "the study's numerics moved; results computed with the recorded numerics: " + "; ".join(data["results"])
        + ". Rerun them or say which predate the change, then: python scripts/golden_run.py --write")
    for run in runs.values():  # the record has something to compare: warm-up episodes and updates happened
        assert run["warmup"] and len(run["first_losses"]) == golden.FIRST_UPDATES


def test_a_moved_number_is_caught(runs):
    """Fault injection: each part of a run, changed, is reported; the digest only on the recorded CPU."""
    key = "cartpole-crl:big/softmoe"
    moved = copy.deepcopy(runs)
    moved[key]["digest"] = "0" * 16
    assert golden.differences(runs, moved, same_cpu=True) == [
        f"{key}: the run's digest {'0' * 16} differs from the record's {runs[key]['digest']}"]
    assert golden.differences(runs, moved, same_cpu=False) == []  # another CPU: the digest is not compared
    moved = copy.deepcopy(runs)
    moved[key]["first_losses"][0][1] *= 1 + 10 * golden.RTOL
    (problem,) = golden.differences(runs, moved, same_cpu=False)
    assert "first losses" in problem
    moved[key]["first_losses"][0][1] = runs[key]["first_losses"][0][1] * (1 + golden.RTOL / 10)  # rounding
    assert golden.differences(runs, moved, same_cpu=False) == []
    moved = copy.deepcopy(runs)
    moved[key]["warmup"][0][2] += 1
    assert "warm-up episodes differ" in golden.differences(runs, moved, same_cpu=False)[0]
    moved = copy.deepcopy(runs)
    moved[key]["init"] = "f" * 16
    assert golden.differences(runs, moved, same_cpu=False) == []
    assert "initial weights differ" in golden.differences(runs, moved, same_cpu=True)[0]


def test_the_command_reports_and_names_the_results_that_predate(runs, tmp_path, capsys):
    data = json.loads(golden.RECORD.read_text())
    for record in golden.records_of(data):
        record["runs"]["mountaincar-crl:dense"]["warmup"] = []  # records the engine no longer matches
    path = tmp_path / "record.json"
    path.write_text(json.dumps({"results": data["results"], "records": golden.records_of(data)}))
    assert golden.main(["--record", str(path)]) == 1
    out = capsys.readouterr().out
    assert "the study's numerics moved" in out and "mountaincar-crl:dense: the warm-up episodes differ" in out
    assert data["results"][0] in out
    assert golden.main(["--record", str(tmp_path / "missing.json")]) == 2


def test_a_record_per_kind_of_cpu_is_written_beside_the_others(runs, tmp_path, capsys, monkeypatch):
    """--write replaces this CPU kind's record and keeps another kind's; the comparison then takes this
    kind's record, bit for bit, and a file of the older one-record form still reads."""
    other = {"capability": "AVX2", "model": "Some Other CPU", "amx": [], "avx512": []}
    old = {"cpu": other, "torch": "x", "numpy": "y", "results": ["some study"], "runs": runs}  # older form
    path = tmp_path / "record.json"
    path.write_text(json.dumps(old))
    assert golden.records_of(old) == [{"cpu": other, "torch": "x", "numpy": "y", "runs": runs}]
    monkeypatch.setattr(golden, "run_all", lambda: runs)  # the runs of this module, not trained twice
    assert golden.main(["--record", str(path), "--write"]) == 0
    data = json.loads(path.read_text())
    assert data["results"] == ["some study"]
    assert [r["cpu"] for r in data["records"]] == [other, golden.cpu_kind()]
    assert golden.main(["--record", str(path), "--write"]) == 0  # again: replaced, not added
    assert [r["cpu"] for r in json.loads(path.read_text())["records"]] == [other, golden.cpu_kind()]
    capsys.readouterr()
    assert golden.main(["--record", str(path)]) == 0
    assert "bit for bit (this kind of CPU has a record)" in capsys.readouterr().out
