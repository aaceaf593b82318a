"""``moerl report --out`` and ``moerl eval --out`` never write inside a run directory (its ``tb/`` and any
folder below it included) and never replace a file moerl did not write (one line, exit 2, file intact);
they do replace their own earlier output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from moerl.cli import main

PRE_MOVE = Path(__file__).parent / "data" / "pre-move"


def test_outputs_stay_out_of_runs_and_off_other_files(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(PRE_MOVE / "sb3", run)
    event = next((run / "tb").iterdir())
    before = event.read_bytes()
    readme = tmp_path / "README.md"
    readme.write_text("# my notes\n")
    refused = [
        ["report", str(run), "--out", str(run / "tb" / event.name)],  # the event file itself
        ["report", str(run), "--out", str(run / "tb" / "r.md")],  # a new file inside the run
        ["report", str(run), "--out", str(run / "tb" / "rep")],  # a report folder inside the run
        ["report", str(run), "--out", str(readme)],  # a file moerl did not write
        ["eval", str(run), "--episodes", "1", "--out", str(readme)],
        ["eval", str(run), "--episodes", "1", "--out", str(run / "tb" / "e.json")],
    ]
    for args in refused:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("inside the run directory" in err or "not written by moerl" in err), err
    assert event.read_bytes() == before and readme.read_text() == "# my notes\n"
    assert sorted(p.name for p in (run / "tb").iterdir()) == [event.name]
    for args in (["report", str(run), "--out", str(tmp_path / "r.md")],
                 ["eval", str(run), "--episodes", "1", "--out", str(tmp_path / "e.json")]):
        assert main(args) == 0 and main(args) == 0, args  # written, then replaced (moerl's own file)
    capsys.readouterr()
    assert json.loads((tmp_path / "e.json").read_text())["written_by"] == "moerl eval"
    assert "| big | softmoe |" in (tmp_path / "r.md").read_text()
