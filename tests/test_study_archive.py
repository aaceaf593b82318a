"""``scripts/study_archive.py``: a real tiny sweep's finished runs saved without their models and events,
read back by the report and the cost script, restored into a new logdir where a relaunch of the sweep trains
nothing, and where only a missing run is trained again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from moerl.cli import main
from moerl.rl.report.data import load_runs
from tests.conftest import load_script

TINY = {"timesteps": 400, "eval.freq": 200, "eval.episodes": 1, "eval.final_episodes": 1,
        "dqn.learning_starts": 100, "dqn.batch_size": 16, "network.hidden": 8}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("archive")
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": TINY, "logdir": str(tmp / "runs"), "seeds": "0-1",
                                    "settings": [{"env": "cartpole-crl", "env_kwargs.block_steps": 100}],
                                    "variants": [{"arch": "dense"}, {"arch": "big", "router": "softmoe"}]}))
    assert main(["sweep", str(path), "--workers", "1"]) == 0
    return path, tmp / "runs", tmp


def _tree(folder: Path, runs_only: bool = False) -> dict[str, bytes]:
    """Every file below ``folder`` by relative path; ``runs_only``: those inside run directories."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not (runs_only and (p.parent == folder or p.relative_to(folder).parts[0][0] == "."))}


def test_save_keeps_the_readers_files_once_and_leaves_unfinished_runs_out(swept):
    archive_mod = load_script("study_archive")
    _, logdir, tmp = swept
    runs = archive_mod.finished_runs(logdir)
    assert len(runs) == 4 and all((r / "model.zip").is_file() and (r / "tb").is_dir() for r in runs)
    # a fifth run directory that did not finish (copied from a finished one, then marked interrupted)
    stopped = logdir / "stopped_s9"
    archive_mod.copy_run(runs[0], stopped)
    status = json.loads((stopped / "status.json").read_text())
    (stopped / "status.json").write_text(json.dumps({**status, "status": "interrupted"}))

    archive = tmp / "archive"
    assert archive_mod.save(logdir, archive) == (4, 0, 1)
    assert sorted(p.name for p in archive.iterdir()) == sorted([r.name for r in runs] + [".sweep"])
    for run in runs:
        kept = sorted(p.name for p in (archive / run.name).iterdir())
        assert kept == sorted(n for n in archive_mod.KEPT if (run / n).is_file())
        assert "model.zip" not in kept and "tb" not in kept
        for name in kept:
            assert (archive / run.name / name).read_bytes() == (run / name).read_bytes()
    launches = list((archive / archive_mod.LAUNCHES).glob("*.json"))
    assert len(launches) == 1
    assert archive_mod.wall_seconds(archive) == json.loads((logdir / "sweep.json").read_text())["seconds"] > 0

    before = _tree(archive)
    assert archive_mod.save(logdir, archive) == (0, 4, 1)  # nothing twice, the launch record once
    assert _tree(archive) == before

    shutil.rmtree(stopped)


def test_archived_runs_are_read_by_the_report_and_the_cost_script(swept):
    archive_mod = load_script("study_archive")
    _, logdir, tmp = swept
    archive = tmp / "archive-read"
    archive_mod.save(logdir, archive)
    from_archive, skipped = load_runs([archive])
    from_logdir, _ = load_runs([logdir])
    assert skipped == [] and len(from_archive) == 4
    assert sorted((r.path.name, json.dumps(r.results, sort_keys=True)) for r in from_archive) == sorted(
        (r.path.name, json.dumps(r.results, sort_keys=True)) for r in from_logdir)
    cost = load_script("study_cost")
    found, _, partial = cost.batches([str(archive)])
    assert partial == 0 and len(found) == 2  # one batch per variant
    assert found == cost.batches([str(logdir)])[0]
    wall = json.loads((logdir / "sweep.json").read_text())["seconds"]
    core = sum(b["seconds"] for b in found.values())
    assert cost.sweep_lines([str(archive)], found) == [
        f"{archive}: 4 runs in 2 finished batches, {core / 3600:.2f} core hours; 1 launch(es), "
        f"{wall / 3600:.2f} wall hours"]


def test_a_restored_sweep_trains_nothing_and_only_what_is_missing(swept, capsys):
    archive_mod = load_script("study_archive")
    path, logdir, tmp = swept
    archive = tmp / "archive-restore"
    archive_mod.save(logdir, archive)
    fresh = tmp / "fresh"
    assert archive_mod.restore(archive, fresh) == (4, 0)
    assert archive_mod.restore(archive, fresh) == (0, 4)
    before = _tree(fresh, runs_only=True)
    capsys.readouterr()
    assert main(["sweep", str(path), "--workers", "1", "--logdir", str(fresh)]) == 0
    out = capsys.readouterr().out
    assert "2 need nothing, 0 to run" in out
    assert _tree(fresh, runs_only=True) == before

    # one run lost: its job alone trains again; the other job's runs are not touched
    gone = next(p for p in sorted(fresh.iterdir()) if "_dense-" in p.name)

    shutil.rmtree(gone)
    assert main(["sweep", str(path), "--workers", "1", "--logdir", str(fresh)]) == 0
    out = capsys.readouterr().out
    assert "1 need nothing, 1 to run" in out
    after = _tree(fresh, runs_only=True)
    assert json.loads((gone / "status.json").read_text())["status"] == "finished"
    assert (gone / "model.zip").is_file()
    untouched = {k: v for k, v in before.items() if "_big_" in k}
    assert untouched and all(after[k] == v for k, v in untouched.items())


def test_a_missing_source_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys):
    archive_mod = load_script("study_archive")
    for command in (["save", str(tmp_path / "nowhere"), str(tmp_path / "out")],
                    ["restore", str(tmp_path / "nowhere"), str(tmp_path / "out")]):
        assert archive_mod.main(command) == 2
        err = capsys.readouterr().err
        assert err == f"study_archive: '{tmp_path / 'nowhere'}' is not a folder\n"
        assert list(tmp_path.iterdir()) == []
