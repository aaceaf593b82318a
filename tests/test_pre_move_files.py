"""Files written before the layout moved to one package per research line still load, evaluate, report and
resume (``tests/data/pre-move``: written by commit 20df4b1, whose pickles name ``moerl.agents.*`` and
``moerl.envs.*`` classes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from moerl import MoEDQN
from moerl.cli import main

DATA = Path(__file__).parent / "data" / "pre-move"


@pytest.fixture()
def old(tmp_path: Path) -> Path:
    shutil.copytree(DATA, tmp_path / "runs", ignore=shutil.ignore_patterns("*.md", "*.py"))
    return tmp_path / "runs"


def _status(run: Path) -> str:
    return json.loads((run / "status.json").read_text())["status"]


def test_an_old_model_loads_and_predicts_as_the_old_run_evaluated(old):
    model = MoEDQN.load(old / "sb3" / "model.zip", device="cpu")
    assert type(model.policy).__module__ == "moerl.rl.sb3.policy"  # served from the new place
    assert model.num_timesteps == 1200 and model.policy.q_net.network_config.arch == "big"
    obs = np.zeros((3, model.observation_space.shape[0]), dtype=np.float32)
    assert model.predict(obs, deterministic=True)[0].shape == (3,)


def test_old_runs_evaluate_and_report(old, capsys):
    for run in ("sb3", "batched_s0"):
        assert main(["eval", str(old / run), "--episodes", "1"]) == 0
        assert json.loads(capsys.readouterr().out)["per_task"]
    assert main(["report", str(old / "sb3"), str(old / "batched_s0"), str(old / "batched_s1")]) == 0
    out = capsys.readouterr().out
    assert "| cartpole-crl | big/softmoe" in out


@pytest.mark.parametrize("cut", ["sb3-cut", "batched-cut_s0"])
def test_old_interrupted_runs_resume_to_the_end(old, cut):
    assert _status(old / cut) != "finished"
    assert main(["train", "--resume", str(old / cut), "--no-progress", "-q"]) == 0
    runs = [old / cut] if cut == "sb3-cut" else [old / "batched-cut_s0", old / "batched-cut_s1"]
    for run in runs:
        assert _status(run) == "finished", run
        rows = [tuple(line.split(",")[:2]) for line in (run / "eval.csv").read_text().splitlines()[1:]]
        assert len(set(rows)) == len(rows), "an evaluation written twice"
        assert {int(step) for step, _ in rows} == {0, 400, 800, 1200}, rows
        assert json.loads((run / "results.json").read_text())["timesteps"] == 1200
