"""End-to-end: ``moerl train`` on the tiny digits suite writes a full run directory; bad input exits 2."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from moerl.cli import main

torch.set_num_threads(1)
FAST = ["--set", "samples_per_epoch=256", "--set", "channels=4", "--set", "hidden=8", "--no-progress"]


def test_cli_train_and_eval_routing(tmp_path, capsys):
    rc = main(["train", "--env", "digits-mtl", "--algo", "wpl", "--epochs", "2", "--seed", "1",
               "--set", "rho=0.3", "--logdir", str(tmp_path), *FAST])
    assert rc == 0
    (run,) = tmp_path.iterdir()
    assert re.fullmatch(r"digits-mtl_wpl-[0-9a-f]{8}_s1", run.name)
    for f in ("config.yaml", "status.json", "results.json", "eval.csv", "model.pt", "routing_map.png",
              "policy_evolution.png"):
        assert (run / f).is_file(), f
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    res = json.loads((run / "results.json").read_text())
    assert len(res["test_accuracy_per_task"]) == 10 and len(res["greedy_routes"]) == 10
    routes = res["task_routes"]
    pairs = [(i, j) for i in range(10) for j in range(i + 1, 10)]
    assert res["collision_fraction"] == sum(routes[i] == routes[j] for i, j in pairs) / len(pairs)
    assert res["distinct_routes"] == len({tuple(r) for r in routes})
    assert set(res["collisions_by_epoch"]) == {"1", "2"}
    groups = [sorted(i for i in range(10) if routes[i] == r) for r in {tuple(r) for r in routes}]
    assert sorted(res["collision_groups"]) == sorted(g for g in groups if len(g) > 1)
    acc = res["test_accuracy_per_task"]
    collided = [t for g in res["collision_groups"] for t in g]
    if collided:
        assert res["collided_accuracy"] == pytest.approx(sum(acc[t] for t in collided) / len(collided))
    if len(collided) < 10:
        free = [t for t in range(10) if t not in collided]
        assert res["free_accuracy"] == pytest.approx(sum(acc[t] for t in free) / len(free))
    assert res["collisions_by_epoch"]["2"]["collision_groups"] == res["collision_groups"]
    rows = list(csv.DictReader(open(run / "eval.csv")))
    assert len(rows) == 2 * 10
    ea = EventAccumulator(str(run / "tb"))
    ea.Reload()
    assert [e.step for e in ea.Scalars("test/accuracy_mean")] == [1, 2]
    assert "test/accuracy_task9" in ea.Tags()["scalars"]
    assert ea.Scalars("routing/collision_fraction")[-1].value == pytest.approx(res["collision_fraction"])
    assert ea.Scalars("routing/distinct_routes")[-1].value == res["distinct_routes"]
    assert ea.Scalars("routing/collided_tasks")[-1].value == len(collided)
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["test_accuracy"] - res["test_accuracy"]) < 1e-9
    assert out["task_routes"] == routes and out["collision_groups"] == res["collision_groups"]
    # RL evaluation knobs are refused, not ignored
    assert main(["eval", str(run), "--episodes", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--episodes does not apply to 'routing' runs" in err and "--data-dir, --device" in err
    assert "\n" not in err


def test_cli_baseline_with_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("env: digits-mtl\nalgo: cross-stitch-all-fc\nepochs: 1\n")
    assert main(["train", "--config", str(cfg), "--logdir", str(tmp_path / "runs"), *FAST]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"digits-mtl_cross-stitch-all-fc-[0-9a-f]{8}_s0", run.name)
    assert (run / "results.json").is_file()


def test_cli_bad_input_exits_2_and_leaves_nothing(tmp_path, capsys):
    logdir = tmp_path / "runs"
    assert main(["train", "--env", "digits-mtl", "--algo", "wlp", "--logdir", str(logdir)]) == 2
    err = capsys.readouterr().err
    assert "wlp" in err and "did you mean 'wpl'" in err and "cross-stitch-all-fc" in err
    assert main(["train", "--env", "digits-mtl", "--set", "rhoo=0.3", "--logdir", str(logdir)]) == 2
    assert "rhoo" in capsys.readouterr().err
    assert main(["train", "--env", "digits-mtl", "--data-dir", str(tmp_path / "nope"), "--logdir", str(logdir)]) == 2
    assert main(["train", "--env", "digits-mtl", "--timesteps", "5", "--logdir", str(logdir)]) == 2
    if not torch.cuda.is_available():
        assert main(["train", "--env", "digits-mtl", "--device", "cuda", "--logdir", str(logdir)]) == 2
        assert "device 'cuda'" in capsys.readouterr().err
    # the routing choices of issue 12: one line naming the bad value and the valid choices
    for key, bad, valid in (("wpl_form", "algorithm3", "original, printed"),
                            ("collab_reward", "frequency", "count, probability"),
                            ("wpl_own_prior", "1.5", "[0, 1)")):
        assert main(["train", "--env", "digits-mtl", "--set", f"{key}={bad}", "--logdir", str(logdir)]) == 2
        err = capsys.readouterr().err.strip()
        assert bad in err and valid in err and "\n" not in err, err
    assert not logdir.exists() or not any(logdir.iterdir())


@pytest.mark.parametrize("args, key", [
    (["--algo", "task-specific-1-fc", "--set", "rho=0.3"], "rho"),
    (["--algo", "q-tabular", "--set", "wpl_own_prior=0.2"], "wpl_own_prior"),
    (["--algo", "wpl", "--set", "epsilon=0.2"], "epsilon"),
    (["--algo", "reinforce", "--config", "routing/mnist-mtl-wpl"], "wpl_form"),  # a file's key counts too
])
def test_a_key_the_algo_does_not_read_is_refused(tmp_path, capsys, args, key):
    """A setting that would be silently ignored is refused: one line naming it and who reads it, exit 2,
    no run directory."""
    logdir = tmp_path / "runs"
    assert main(["train", "--env", "digits-mtl", *args, "--logdir", str(logdir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'{key}' does not apply" in err and "only " in err
    assert not logdir.exists()
