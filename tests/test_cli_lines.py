"""The env names the research line, and the line owns ``--algo``: DQN on RL envs, routers and baselines on
routing datasets; an algorithm a line lacks is one line and exit 2, with nothing written."""

from __future__ import annotations

import json

import pytest

from moerl.cli import main

QUICK = ["--timesteps", "300", "--set", "dqn.learning_starts=100", "--set", "network.hidden=8",
         "--set", "eval.episodes=1", "--set", "eval.final_episodes=1", "--set", "eval.freq=0", "--no-progress"]


def test_the_rl_line_takes_algo_dqn_and_refuses_another(tmp_path, capsys):
    logdir = tmp_path / "runs"
    assert main(["train", "--env", "cartpole-crl", "--algo", "a2c", "--logdir", str(logdir), *QUICK]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'a2c'" in err and "dqn, ppo" in err, err
    assert not logdir.exists()
    assert main(["train", "--env", "cartpole-crl", "--algo", "dqn", "--arch", "dense", "--logdir", str(logdir),
                 "--run-name", "with-algo", *QUICK]) == 0
    assert main(["train", "--env", "cartpole-crl", "--arch", "dense", "--logdir", str(logdir),
                 "--run-name", "without", *QUICK]) == 0
    capsys.readouterr()
    # --algo dqn is the default: the same config, the same results
    assert (logdir / "with-algo" / "config.yaml").read_text() == (logdir / "without" / "config.yaml").read_text()
    a, b = (json.loads((logdir / r / "results.json").read_text()) for r in ("with-algo", "without"))
    assert a["final_eval"] == b["final_eval"]


def test_the_routing_line_keeps_its_own_algos(tmp_path, capsys):
    logdir = tmp_path / "runs"
    assert main(["train", "--env", "digits-mtl", "--algo", "dqn", "--logdir", str(logdir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'dqn'" in err and "wpl" in err, err
    assert not logdir.exists()


def test_moerl_version(capsys):
    import moerl

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"moerl {moerl.__version__}"
