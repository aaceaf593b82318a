"""Checkpoints and exact resume: a killed (SIGKILL, at a random moment) or stopped (SIGTERM) run, resumed,
ends with the same weights, evaluations, results and TensorBoard curves as the uninterrupted run."""

import csv
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from moerl.cli import main
from tests.conftest import read_tb_scalars

ARGS = ["--env", "cartpole-crl", "--arch", "big", "--router", "softmoe", "--timesteps", "3000", "--seed", "11",
        "--set", "env_kwargs.block_steps=750", "--set", "checkpoint.every=1000", "--set", "eval.freq=500",
        "--set", "eval.episodes=2", "--set", "eval.final_episodes=3", "--set", "logging.metrics_interval=400",
        "--no-progress"]


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "moerl", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    assert main(["train", *ARGS, "--logdir", str(root), "--run-name", "ref"]) == 0
    return root / "ref"


def _kill_after_first_checkpoint(run: Path, proc: subprocess.Popen, sig: int, rng: random.Random) -> None:
    deadline = time.time() + 120
    while not (run / "checkpoint.json").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.8))
    assert proc.poll() is None, "the run finished before it could be killed; lengthen it"
    proc.send_signal(sig)
    proc.communicate(timeout=120)


def _tb(run: Path) -> dict:
    scalars = read_tb_scalars(run / "tb")
    return {tag: sorted(vals) for tag, vals in scalars.items() if not tag.startswith("time/")}


def _same_run(a: Path, b: Path) -> None:

    from moerl import MoEDQN

    ma, mb = MoEDQN.load(a / "model.zip", device="cpu"), MoEDQN.load(b / "model.zip", device="cpu")
    for (k, va), vb in zip(ma.policy.state_dict().items(), mb.policy.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    for name in ("eval.csv", "eval_usage.csv", "metrics.csv"):  # rewritten from the checkpoint: no duplicate rows
        assert (a / name).read_text() == (b / name).read_text(), name
    ra, rb = (json.loads((p / "results.json").read_text()) for p in (a, b))
    for key in ("final_eval", "continual", "timesteps", "parameters"):
        assert ra[key] == rb[key], key
    ta, tb = _tb(a), _tb(b)
    assert ta.keys() == tb.keys()
    for tag in ta:
        steps = [s for s, _ in tb[tag]]
        assert len(steps) == len(set(steps)), f"duplicated steps in {tag}"
        assert ta[tag] == tb[tag], tag


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_and_resumed_equals_uninterrupted(reference, tmp_path, sig):
    rng = random.Random(int(time.time()))
    run = tmp_path / "cut"
    proc = _cli(*ARGS, "--logdir", str(tmp_path), "--run-name", "cut")
    _kill_after_first_checkpoint(run, proc, sig, rng)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == ("running" if sig == signal.SIGKILL else "interrupted")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    _same_run(reference, run)


def test_a_run_that_dies_between_an_evaluation_and_the_next_checkpoint_resumes_without_duplicates(
        tmp_path, monkeypatch):
    """The case a random kill time only sometimes hits: evaluations every 400 steps, checkpoints every 1,000,
    a task switch at 900. The run dies just before its checkpoint at 2,000, after the evaluation at 1,200
    drew the switch at 900 (behind the checkpoint at 1,000). Resumed from 1,000, the switch must be neither
    lost nor written twice, and the whole run equals one trained in a single learn call."""
    from moerl.rl.sb3 import checkpoint as dqn_checkpoint

    swap = {"env_kwargs.block_steps=750": "env_kwargs.block_steps=900", "eval.freq=500": "eval.freq=400"}
    args = [swap.get(a, a) for a in ARGS]
    one = [a if a != "checkpoint.every=1000" else "checkpoint.every=0" for a in args]
    assert main(["train", *one, "--logdir", str(tmp_path), "--run-name", "one"]) == 0
    real = dqn_checkpoint.save_checkpoint

    def dies_at_2000(run_path, model, extra):
        if model.num_timesteps == 2000:
            raise RuntimeError("simulated crash before the checkpoint at 2,000")
        return real(run_path, model, extra)

    monkeypatch.setattr(dqn_checkpoint, "save_checkpoint", dies_at_2000)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["train", *args, "--logdir", str(tmp_path), "--run-name", "cut"])
    monkeypatch.undo()
    assert "\n2000," in (tmp_path / "cut" / "eval.csv").read_text()  # it evaluated at 2,000 before dying
    assert main(["train", "--resume", str(tmp_path / "cut"), "--no-progress"]) == 0
    _same_run(tmp_path / "one", tmp_path / "cut")


def test_chunked_training_equals_one_learn_call(reference, tmp_path):
    """Checkpoint chunks are invisible: every=1000 (the reference) == every=0 (one learn call)."""
    args = [a if a != "checkpoint.every=1000" else "checkpoint.every=0" for a in ARGS]
    assert main(["train", *args, "--logdir", str(tmp_path), "--run-name", "one"]) == 0
    assert not (tmp_path / "one" / "checkpoint.json").exists()
    _same_run(reference, tmp_path / "one")


@pytest.mark.parametrize("extra,message", [
    (["--arch", "dense"], "cannot change a resumed run"),
    (["--set", "dqn.learning_rate=1e-3"], "cannot change a resumed run"),
    (["--timesteps", "10"], "is below the checkpoint's step"),
    (["--logdir", "elsewhere"], "--logdir cannot move a resumed run"),
])
def test_resume_refuses_changes(reference, tmp_path, extra, message, capsys):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(reference, run)
    status = json.loads((run / "status.json").read_text())
    status["status"] = "interrupted"
    (run / "status.json").write_text(json.dumps(status))
    (run / "checkpoint.json").write_text(json.dumps({"folder": "checkpoints/step-1000", "step": 1000}))
    assert main(["train", "--resume", str(run), *extra]) == 2
    assert message in capsys.readouterr().err


def test_resume_refuses_a_finished_run(reference, capsys):
    assert main(["train", "--resume", str(reference)]) == 2
    assert "is finished; only interrupted, failed or crashed runs resume" in capsys.readouterr().err


def test_a_finished_run_keeps_no_checkpoint(reference):
    assert not (reference / "checkpoint.json").exists() and not (reference / "checkpoints").exists()


def test_eval_csv_rows(reference):
    rows = list(csv.DictReader((reference / "eval.csv").open()))
    assert sorted({int(r["step"]) for r in rows}) == [0, 500, 1000, 1500, 2000, 2500, 3000]
