"""Run names that never collide silently, ``moerl runs`` over real tiny runs, and ``moerl report`` on a folder
that also holds files that are not runs (the README's results script writes ``table.md`` there)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from moerl.cli import main

TINY = ["--env", "cartpole-crl", "--set", "env_kwargs.block_steps=150", "--set", "eval.freq=150",
        "--set", "dqn.learning_starts=50", "--set", "dqn.batch_size=32", "--set", "eval.episodes=2",
        "--set", "eval.final_episodes=2", "--set", "network.hidden=16", "--no-progress"]
ID = "[0-9a-f]{8}"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Real tiny runs: dense at two budgets, big/topk with another learning rate, big/softmoe, a routing and a
    masked-experts
    run; a killed and a failed copy; and what a script leaves beside runs (``table.md``, a folder of notes)."""
    root = tmp_path_factory.mktemp("study")
    log = ["--logdir", str(root)]
    assert main(["train", *TINY, "--arch", "dense", "--timesteps", "600", *log]) == 0
    assert main(["train", *TINY, "--arch", "dense", "--timesteps", "900", *log]) == 0
    assert main(["train", *TINY, "--arch", "big", "--router", "topk", "--timesteps", "600",
                 "--set", "dqn.learning_rate=5e-4", *log]) == 0
    assert main(["train", *TINY, "--arch", "big", "--router", "softmoe", "--timesteps", "600", *log]) == 0
    assert main(["train", "--env", "digits-mtl", "--algo", "wpl", "--epochs", "1", "--set", "samples_per_epoch=256",
                 "--set", "channels=4", "--set", "hidden=8", "--no-progress", *log]) == 0
    assert main(["train", "--env", "digits-split", "--arch", "masked-moe", "--mask", "lu", "--experts", "2",
                 "--epochs", "1", "--set", "batch_size=64", "--no-progress", *log]) == 0
    first = sorted(p for p in root.iterdir() if p.name.startswith("cartpole-crl_dense"))[0]
    for name, status in (("killed_s0", {"status": "running", "pid": _dead_pid()}),
                         ("failed_s0", {"status": "failed", "error": "RuntimeError: boom"})):
        shutil.copytree(first, root / "broken" / name)
        data = json.loads((root / "broken" / name / "status.json").read_text())
        (root / "broken" / name / "status.json").write_text(json.dumps({**data, **status}))
    (root / "table.md").write_text("| a table a script wrote |\n")
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("nothing\n")
    return root


def _names(root):
    return sorted(p.name for p in root.iterdir() if (p / "status.json").is_file())


def test_runs_that_differ_in_any_setting_get_different_readable_names(study):
    names = _names(study)
    assert len(names) == 6 and not [n for n in names if re.search(r"-\d+$", n)]  # no silent -2
    dense = [n for n in names if n.startswith("cartpole-crl_dense")]
    assert len(dense) == 2 and all(re.fullmatch(rf"cartpole-crl_dense-{ID}_s0", n) for n in dense)  # no router
    assert any(re.fullmatch(rf"cartpole-crl_big_topk-{ID}_s0", n) for n in names)
    assert any(re.fullmatch(rf"digits-mtl_wpl-{ID}_s0", n) for n in names)
    assert any(re.fullmatch(rf"digits-split_masked-moe_lu_e2_joint-{ID}_s0", n) for n in names)


def test_train_and_sweep_name_the_same_config_alike(study, tmp_path):
    from moerl.runs.sweep.spec import load_sweep

    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": {"env": "cartpole-crl", "arch": "dense", "timesteps": 600, "env_kwargs": {"block_steps": 150},
                 "eval.freq": 150, "dqn.learning_starts": 50, "dqn.batch_size": 32, "eval.episodes": 2,
                 "eval.final_episodes": 2, "network.hidden": 16},
        "seeds": "0", "engine": "sb3"}))
    (job,) = load_sweep(sweep).jobs
    assert job.run_dir(0).name in _names(study)


def test_an_explicit_run_name_still_wins(tmp_path):
    name = "mine_v1.5+lr=3e-4,seed@0"  # every punctuation mark the run-name rule allows
    assert main(["train", *TINY, "--arch", "dense", "--timesteps", "300", "--logdir", str(tmp_path),
                 "--run-name", name]) == 0
    assert _names(tmp_path) == [name]


def test_moerl_runs_lists_status_differences_and_final_numbers(study, capsys, monkeypatch):
    assert main(["runs", str(study)]) == 0
    out, err = capsys.readouterr()
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in out.splitlines() if line.startswith(f"| {study}")}
    assert len(rows) == 8
    by_name = {path.rsplit("/", 1)[-1]: line for path, line in rows.items()}
    assert "| moe-dqn | killed |" in by_name["killed_s0"] and "| moe-dqn | failed |" in by_name["failed_s0"]
    topk = next(line for name, line in by_name.items() if "_big_topk-" in name)
    assert "| finished |" in topk and "dqn.learning_rate=0.0005" in topk and "avg perf " in topk
    assert "network.router=topk" in topk and "network.topk" not in topk  # one topk run: nothing of it differs
    softmoe = next(line for name, line in by_name.items() if "_big_softmoe-" in name)
    assert "network.router=softmoe" in softmoe and "network.topk" not in softmoe and "slots" not in softmoe
    dense = [line for name, line in by_name.items() if "_dense-" in name]
    assert {"timesteps=600" in d for d in dense} == {True, False} and all("network.router" not in d for d in dense)
    wpl = next(line for name, line in by_name.items() if name.startswith("digits-mtl"))
    assert "| routing | finished | - | test acc " in wpl  # the only routing run: nothing differs
    masked = next(line for name, line in by_name.items() if name.startswith("digits-split"))
    results = json.loads(next(study.glob("digits-split*/results.json")).read_text())
    assert f"| masked-experts | finished | - | test acc {results['test']['mean_accuracy']:.3f} |" in masked
    assert "8 runs: 1 failed, 6 finished, 1 killed" in out
    assert err.count("\n") == 1 and "table.md" in err and "notes" in err  # named on one line
    monkeypatch.chdir(study)
    assert main(["runs"]) == 2  # the default folder runs/ does not exist here
    assert "no run directory below runs" in capsys.readouterr().err


def test_report_on_a_folder_skips_and_names_what_is_not_a_run(study, capsys):
    assert main(["report", str(study)]) == 0
    out, err = capsys.readouterr()
    skipped = dict(re.findall(r"moerl: skipped (\S+): (.*)", err))
    assert "not a run directory" in skipped[str(study / "table.md")]
    assert "not a run directory" in skipped[str(study / "notes")]
    # the routing and masked-expert runs are reported in their own sections, not skipped
    assert not any("digits" in path for path in skipped)
    assert "## routing runs" in out and "## masked-experts runs" in out
    assert "not a finished run" in skipped[str(study / "broken" / "failed_s0")]
    assert "| cartpole-crl |" in out
