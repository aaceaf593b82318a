"""Routing runs resume exactly: a learner stopped mid-epoch or at an epoch's end, saved, loaded into a fresh
learner and continued ends with the weights, router state and accuracy of one that never stopped; the CLI
continues a killed (SIGKILL) or stopped (SIGTERM) run to the same files as an uninterrupted one."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from moerl.cli import main
from moerl.routing.config import ALGOS
from moerl.routing.data import build_digits_mtl
from moerl.routing.trainer import RoutingLearner
from tests.conftest import read_tb_scalars

torch.set_num_threads(1)
TINY = {"hidden": 8, "channels": 4, "samples_per_epoch": 256, "batch_size": 32, "device": "cpu"}
EPOCHS = 3


@pytest.fixture(scope="module")
def digits():
    return build_digits_mtl(seed=0)


def _state(learner: RoutingLearner) -> dict[str, np.ndarray]:
    """Every array the rest of training depends on, flattened for comparison."""
    out: dict[str, np.ndarray] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        elif isinstance(value, torch.Tensor):
            out[prefix] = value.detach().cpu().numpy()
        elif isinstance(value, (np.ndarray, int, float)):
            out[prefix] = np.asarray(value)

    walk("", learner.state_dict())
    return out


def _stop_at_batch(learner: RoutingLearner, k: int) -> None:
    """Ask the learner to stop after its ``k``-th mini-batch (as a signal handler would)."""
    real, calls = learner.train_batch, {"n": 0}

    def counted(*args):
        out = real(*args)
        calls["n"] += 1
        if calls["n"] == k:
            learner.request_stop()
        return out

    learner.train_batch = counted  # type: ignore[method-assign]


@pytest.mark.parametrize("algo", ALGOS.names)
@pytest.mark.parametrize("cut", ["mid-epoch", "epoch-end"])
def test_stopped_saved_loaded_and_continued_equals_uninterrupted(digits, algo, cut, tmp_path):
    whole = RoutingLearner(digits, algo=algo, seed=3, **TINY).learn(EPOCHS)

    first = RoutingLearner(digits, algo=algo, seed=3, **TINY)
    per_epoch = TINY["samples_per_epoch"] // TINY["batch_size"]
    _stop_at_batch(first, per_epoch + 3 if cut == "mid-epoch" else per_epoch)
    first.learn(EPOCHS)
    assert first.stopped and first.epoch == 1
    assert (first._cursor is not None) == (cut == "mid-epoch")
    torch.save(first.state_dict(), tmp_path / "state.pt")
    torch.rand(11)  # other code draws from the global generators in between
    np.random.rand(5)

    resumed = RoutingLearner(digits, algo=algo, seed=3, **TINY)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    resumed.learn(EPOCHS - resumed.epoch)
    assert not resumed.stopped and resumed.epoch == EPOCHS
    a, b = _state(whole), _state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert whole.evaluate("test") == resumed.evaluate("test")


def test_state_dict_is_a_copy(digits):
    learner = RoutingLearner(digits, algo="wpl", seed=0, **TINY)
    state = learner.state_dict()
    pi = state["router"]["state"]["pi"].copy()
    learner.learn(1)
    np.testing.assert_array_equal(state["router"]["state"]["pi"], pi)


# -- the CLI: a real kill, then --resume --------------------------------------------------------------
ARGS = ["--env", "digits-mtl", "--algo", "wpl", "--epochs", "4", "--seed", "5", "--set", "samples_per_epoch=6000",
        "--set", "hidden=8", "--set", "channels=4", "--set", "checkpoint_every=1", "--no-progress"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    assert main(["train", *ARGS, "--logdir", str(root), "--run-name", "ref"]) == 0
    return root / "ref"


def _same_run(a: Path, b: Path) -> None:
    ma, mb = (torch.load(p / "model.pt", weights_only=False) for p in (a, b))
    for key, value in ma["model"].items():
        assert torch.equal(value, mb["model"][key]), key
    np.testing.assert_array_equal(ma["router"]["state"]["pi"], mb["router"]["state"]["pi"])
    assert (a / "eval.csv").read_text() == (b / "eval.csv").read_text()
    ra, rb = (json.loads((p / "results.json").read_text()) for p in (a, b))
    ra.pop("train_seconds"), rb.pop("train_seconds")
    assert ra == rb
    ta, tb = read_tb_scalars(a / "tb"), read_tb_scalars(b / "tb")
    assert ta.keys() == tb.keys()
    for tag in ta:
        steps = [s for s, _ in tb[tag]]
        assert len(steps) == len(set(steps)), f"duplicated steps in {tag}"
        assert sorted(ta[tag]) == sorted(tb[tag]), tag


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_the_uninterrupted_result(reference, tmp_path, sig):
    rng = random.Random(int(time.time()))
    run = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "moerl", "train", *ARGS, "--logdir", str(tmp_path),
                             "--run-name", "cut"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoint.json").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.0))
    assert proc.poll() is None, "the run finished before it could be killed; lengthen it"
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    status = json.loads((run / "status.json").read_text())
    if sig == signal.SIGTERM:
        assert status["status"] == "interrupted" and "checkpoint saved" in status["error"]
    else:
        assert status["status"] == "running"  # nobody could mark it: moerl tells it is crashed
    assert not (run / "results.json").exists()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert not (run / "checkpoint.json").exists() and not (run / "checkpoints").exists()
    _same_run(reference, run)


@pytest.mark.parametrize("where", ["last epoch", "after learn"])
def test_sigterm_at_the_end_of_training_still_leaves_a_checkpoint(reference, tmp_path, monkeypatch, where):
    """Fault injection: SIGTERM raised inside the last epoch's callback, or just after ``learn`` returned,
    when nothing is left to stop. The run is marked interrupted with the checkpoint it says it saved, and
    resuming it gives the reference."""
    import os

    from moerl.routing import experiment as routing

    last = int(ARGS[ARGS.index("--epochs") + 1])
    if where == "last epoch":
        on_epoch = routing._RoutingRun._on_epoch

        def signalling_on_epoch(self, epoch, lr, stats):
            on_epoch(self, epoch, lr, stats)
            if epoch == last:
                os.kill(os.getpid(), signal.SIGTERM)

        monkeypatch.setattr(routing._RoutingRun, "_on_epoch", signalling_on_epoch)
    else:
        learn = RoutingLearner.learn

        def signalling_learn(self, *args, **kwargs):
            out = learn(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGTERM)
            return out

        monkeypatch.setattr(RoutingLearner, "learn", signalling_learn)
    sparse = [*ARGS[:ARGS.index("checkpoint_every=1")], "checkpoint_every=3", *ARGS[ARGS.index("checkpoint_every=1") + 1:]]
    assert main(["train", *sparse, "--logdir", str(tmp_path), "--run-name", "cut"]) == 143  # no periodic one at the end
    run = tmp_path / "cut"
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and status["error"] == "terminated by SIGTERM (checkpoint saved)"
    assert json.loads((run / "checkpoint.json").read_text())["step"] == last
    assert not (run / "results.json").exists()
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    _same_run(reference, run)


@pytest.mark.parametrize("extra,message", [
    (["--epochs", "2"], "--epochs 2 is below the checkpoint's epoch"),
    (["--algo", "q-tabular"], "cannot change a resumed run"),
    (["--set", "lr=0.5"], "cannot change a resumed run"),
])
def test_resume_refuses_changes(tmp_path, extra, message, capsys):
    run = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "moerl", "train", *ARGS, "--logdir", str(tmp_path),
                             "--run-name", "r"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoint.json").is_file() or json.loads((run / "checkpoint.json").read_text())["step"] < 3:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"


def test_resume_refuses_a_finished_run_and_keeps_no_checkpoint(reference, capsys):
    assert not (reference / "checkpoints").exists()
    assert main(["train", "--resume", str(reference)]) == 2
    assert "is finished; only interrupted, failed or crashed runs resume" in capsys.readouterr().err
