"""``moerl train --algo ppo --seeds``: BatchedPPO's runs land as SB3-path PPO runs do (one directory per seed,
the same files, TensorBoard read back), models load in ``MoEPPO``, and a killed batch resumes bit for bit."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from moerl import MoEPPO
from moerl.cli import main
from tests.conftest import read_tb_scalars

ARGS = ["--algo", "ppo", "--env", "cartpole-crl", "--arch", "big", "--router", "softmoe", "--timesteps", "1200",
        "--set", "env_kwargs.block_steps=400", "--set", "eval.freq=400", "--set", "eval.episodes=2",
        "--set", "eval.final_episodes=2", "--set", "network.hidden=16", "--set", "ppo.n_steps=32",
        "--set", "logging.metrics_interval=256", "--no-progress"]
PPO_DIAGNOSTICS = {"train/approx_kl", "train/clip_fraction", "train/explained_variance", "train/entropy_loss",
                   "train/policy_gradient_loss", "train/value_loss", "train/loss", "train/learning_rate",
                   "train/clip_range"}


@pytest.fixture(scope="module")
def batched(tmp_path_factory):
    root = tmp_path_factory.mktemp("batched")
    assert main(["train", *ARGS, "--seeds", "3,5", "--logdir", str(root), "--run-name", "b"]) == 0
    return root


@pytest.fixture(scope="module")
def sb3(tmp_path_factory):
    root = tmp_path_factory.mktemp("sb3")
    assert main(["train", *ARGS, "--seed", "3", "--logdir", str(root), "--run-name", "ref"]) == 0
    return root / "ref"


def _rows(path: Path, name: str = "eval.csv") -> list[dict]:
    with open(path / name, newline="") as f:
        return list(csv.DictReader(f))


def test_seeds_of_ppo_train_on_the_batched_engine_into_sb3_shaped_run_directories(batched, sb3):
    assert sorted(p.name for p in batched.iterdir()) == ["b_s3", "b_s5"]
    for name in ("b_s3", "b_s5"):
        run = batched / name
        assert {p.name for p in run.iterdir()} == {p.name for p in sb3.iterdir()}
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["algo"] == "ppo" and config["engine"] == "batched" and config["seed"] == int(name[-1])
        assert config["timesteps"] == 1280  # whole rollouts (2 x 4 envs x 32 steps... rounded up), as on sb3
        ours, theirs = _rows(run), _rows(sb3)
        assert ours[0].keys() == theirs[0].keys()
        tasks = {r["task"] for r in theirs}
        assert {r["task"] for r in ours} == tasks
        # evaluations at the rollout boundary at or after each multiple of eval.freq (BatchedPPO stops
        # between rollouts); the SB3 path evaluates mid-rollout at the multiples themselves
        assert sorted({int(r["step"]) for r in ours}) == [0, 512, 896, 1280]
        usage, usage_ref = _rows(run, "eval_usage.csv"), _rows(sb3, "eval_usage.csv")
        assert {r["layer"] for r in usage} == {r["layer"] for r in usage_ref} == {"actor.big", "critic.big"}
        assert {r["key"] for r in _rows(run, "metrics.csv")} == {r["key"] for r in _rows(sb3, "metrics.csv")}
        res, ref = (json.loads((p / "results.json").read_text()) for p in (run, sb3))
        assert set(ref) <= set(res) and res["algo"] == "ppo" and res["engine"] == "batched"
        assert res["seeds_in_batch"] == 2 and res["final_eval"].keys() == ref["final_eval"].keys() == tasks
        assert res["continual"].keys() == ref["continual"].keys()
        assert res["parameters"] == ref["parameters"]
        tags, theirs_tags = set(read_tb_scalars(run / "tb")), set(read_tb_scalars(sb3 / "tb"))
        assert PPO_DIAGNOSTICS <= tags
        assert {f"train/return/{t}" for t in tasks} & tags  # training returns per task, as the anchors report
        for prefix in ("eval/", "eval_usage/", "moe/", "train/"):
            assert {t for t in tags if t.startswith(prefix)} <= {t for t in theirs_tags if t.startswith(prefix)}
        assert {t for t in tags if t.startswith(("eval/", "moe/"))} == {
            t for t in theirs_tags if t.startswith(("eval/", "moe/"))}
        kl = read_tb_scalars(run / "tb")["train/approx_kl"]
        assert [s for s, _ in kl] == list(range(128, 1281, 128))  # one point per rollout's update


def test_the_model_loads_in_moeppo_and_moerl_eval_and_report_read_the_runs(batched, capsys):
    model = MoEPPO.load(batched / "b_s5" / "model.zip", device="cpu")
    assert model.num_timesteps == 1280 and model.n_envs == 4 and model.n_steps == 32
    assert main(["eval", str(batched / "b_s5"), "--episodes", "1"]) == 0
    assert main(["report", str(batched / "b_s3"), str(batched / "b_s5")]) == 0
    assert "big (ppo)" in capsys.readouterr().out


def test_an_exported_member_predicts_the_batched_engines_greedy_actions(tmp_path):
    """The zip holds member i's actor and critic: ``MoEPPO.load`` acts greedily as the engine's member does."""
    from moerl.core.config import from_dict
    from moerl.rl.batch_engines import PPOBatchEngine, suite_spec
    from moerl.rl.ppo_config import PPORunConfig, validate_ppo
    from moerl.runs.rundir import RunDir

    config = validate_ppo(from_dict(PPORunConfig, {
        "env": "cartpole-mtrl", "network": {"arch": "middle", "router": "topk", "hidden": 16},
        "ppo": {"n_steps": 16, "learning_rate": 3e-3}, "timesteps": 128}))
    spec = suite_spec("moerl/CartPole-MTRL-v0", {})
    agent = PPOBatchEngine.build([config] * 3, [spec] * 3, [0, 4, 9], "cpu", False)
    agent.learn(128)
    obs = torch.as_tensor(np.stack([spec.reset(seed=k)[0] for k in range(40)]), dtype=torch.float32)
    for i, seed in enumerate(agent.seeds):
        run = RunDir.create(str(tmp_path), f"m{seed}")
        assert PPOBatchEngine.export(run, i, agent, config, spec, seed) > 0
        model = MoEPPO.load(run.path / "model.zip", device="cpu")
        ours = agent.predict(obs[None].expand(3, -1, -1))[i].numpy()
        theirs, _ = model.predict(obs.numpy(), deterministic=True)
        assert (ours == theirs).all(), seed
        state = model.policy.ac.critic.state_dict()
        assert all(torch.equal(v, agent.critic.state_dict_of(i)[k]) for k, v in state.items())


LONG = [*ARGS, "--timesteps", "3000", "--set", "checkpoint.every=500", "--seeds", "3,5", "--engine", "batched"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    assert main(["train", *LONG, "--logdir", str(root), "--run-name", "b"]) == 0
    return root


def _same_batch(a: Path, b: Path) -> None:
    for name in ("b_s3", "b_s5"):
        for file in ("eval.csv", "eval_usage.csv", "metrics.csv", "config.yaml"):
            assert (a / name / file).read_text() == (b / name / file).read_text(), file
        ra, rb = (json.loads((p / name / "results.json").read_text()) for p in (a, b))
        for key in ("train_seconds", "steps_per_second"):
            ra.pop(key), rb.pop(key)
        assert ra == rb
        ma = MoEPPO.load(a / name / "model.zip", device="cpu").policy.state_dict()
        mb = MoEPPO.load(b / name / "model.zip", device="cpu").policy.state_dict()
        assert ma.keys() == mb.keys() and all(torch.equal(v, mb[k]) for k, v in ma.items())
        ta, tb = read_tb_scalars(a / name / "tb"), read_tb_scalars(b / name / "tb")
        assert ta.keys() == tb.keys()
        for tag in ta:
            steps = [s for s, _ in tb[tag]]
            assert len(steps) == len(set(steps)), f"duplicated steps in {tag}"
            assert sorted(ta[tag]) == sorted(tb[tag]), tag


def test_a_sigkilled_ppo_batch_resumes_from_a_member_to_the_uninterrupted_result(uninterrupted, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "moerl", "train", *LONG, "--logdir", str(tmp_path),
                             "--run-name", "b"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    leader = tmp_path / "b_s3"
    deadline = time.time() + 240
    while not (leader / "checkpoint.json").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    assert proc.poll() is None, "the batch finished before it could be killed; lengthen it"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    for name in ("b_s3", "b_s5"):
        assert json.loads((tmp_path / name / "status.json").read_text())["status"] == "running"
        assert not (tmp_path / name / "results.json").exists()
    checkpoint = json.loads((leader / "checkpoint.json").read_text())
    assert checkpoint["step"] % 128 == 0  # at a rollout boundary
    assert main(["train", "--resume", str(tmp_path / "b_s5"), "--no-progress"]) == 0
    for name in ("b_s3", "b_s5"):
        assert json.loads((tmp_path / name / "status.json").read_text())["status"] == "finished"
    assert not (leader / "checkpoints").exists()
    _same_batch(uninterrupted, tmp_path)


@pytest.mark.parametrize("args, engine", [
    (["--seeds", "0,1"], "batched"),  # engine: auto, two seeds of a suite
    (["--seed", "0"], "sb3"),  # one seed alone
    (["--seeds", "0,1", "--set", "ppo.target_kl=0.05"], "batched"),  # a per-seed early stop on both engines
    (["--seed", "0", "--engine", "batched"], "batched"),
])
def test_engine_auto_resolves_for_ppo_as_for_dqn(tmp_path, args, engine):
    assert main(["train", "--algo", "ppo", "--env", "cartpole-mtrl", "--timesteps", "128", "--set", "eval.freq=0",
                 "--set", "eval.episodes=1", "--set", "eval.final_episodes=1", "--set", "ppo.n_steps=16",
                 "--set", "network.hidden=8", "--no-progress", "-q", *args, "--logdir", str(tmp_path)]) == 0
    runs = sorted(tmp_path.iterdir())
    assert runs and all(yaml.safe_load((r / "config.yaml").read_text())["engine"] == engine for r in runs)
