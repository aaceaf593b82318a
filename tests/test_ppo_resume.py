"""Exact resume of MoE PPO runs: killed (SIGKILL at a random moment after the first checkpoint) or stopped
(SIGTERM), then ``moerl train --resume``, a PPO run ends with the same weights, evaluations, metrics, results and
TensorBoard curves as the uninterrupted run. Checkpoints sit at rollout boundaries; what the rest of the run
draws from (numpy's global generator for SB3's minibatch permutations, torch's for the sampled actions, the
environments mid-episode) is in the checkpoint."""

import json
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from moerl.cli import main
from tests.test_resume import _cli, _kill_after_first_checkpoint, _tb

ARGS = ["--algo", "ppo", "--env", "cartpole-crl", "--arch", "big", "--router", "softmoe", "--timesteps", "6144",
        "--seed", "5", "--set", "env_kwargs.block_steps=1536", "--set", "ppo.n_steps=64",
        "--set", "checkpoint.every=1024", "--set", "eval.freq=512", "--set", "eval.episodes=2",
        "--set", "eval.final_episodes=2", "--set", "logging.metrics_interval=512",
        "--set", "logging.log_interval=1", "--no-progress"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ppo_ref")
    assert main(["train", *ARGS, "--logdir", str(root), "--run-name", "ref"]) == 0
    return root / "ref"


def _same_run(a: Path, b: Path) -> None:
    from moerl import MoEPPO

    ma, mb = MoEPPO.load(a / "model.zip", device="cpu"), MoEPPO.load(b / "model.zip", device="cpu")
    for (k, va), vb in zip(ma.policy.state_dict().items(), mb.policy.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    for name in ("eval.csv", "eval_usage.csv", "metrics.csv"):
        assert (a / name).read_text() == (b / name).read_text(), name
    ra, rb = (json.loads((p / "results.json").read_text()) for p in (a, b))
    for key in ("final_eval", "continual", "timesteps", "parameters", "algo"):
        assert ra[key] == rb[key], key
    ta, tb = _tb(a), _tb(b)
    assert ta.keys() == tb.keys()
    assert "train/approx_kl" in ta and "train/return/cartpole-default" in ta
    for tag in ta:
        steps = [s for s, _ in tb[tag]]
        assert len(steps) == len(set(steps)), f"duplicated steps in {tag}"
        assert ta[tag] == tb[tag], tag


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_ppo_run_resumes_to_the_uninterrupted_run(reference, tmp_path, sig):
    run = tmp_path / "cut"
    proc = _cli(*ARGS, "--logdir", str(tmp_path), "--run-name", "cut")
    _kill_after_first_checkpoint(run, proc, sig, random.Random(int(time.time())))
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == ("running" if sig == signal.SIGKILL else "interrupted")
    step = json.loads((run / "checkpoint.json").read_text())["step"]
    assert step % 256 == 0 and step < 6144  # a rollout boundary (4 envs x 64 steps), before the end
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    _same_run(reference, run)


def test_chunked_ppo_training_equals_one_learn_call(reference, tmp_path):
    args = [a if a != "checkpoint.every=1024" else "checkpoint.every=0" for a in ARGS]
    assert main(["train", *args, "--logdir", str(tmp_path), "--run-name", "one"]) == 0
    _same_run(reference, tmp_path / "one")


def test_the_checkpoint_carries_numpys_global_state(tmp_path):
    """SB3's PPO permutes each epoch's minibatches with numpy's global generator: a resume restores it (the
    state saved at the checkpoint, not the one SB3's ``load`` re-seeds), and holds no replay buffer."""
    from moerl.rl.sb3.checkpoint import load_checkpoint

    run = tmp_path / "r"
    # the full-length run: a 2,048-step one could finish (and drop its checkpoint) before the kill on a fast CPU
    proc = _cli(*ARGS, "--logdir", str(tmp_path), "--run-name", "r")
    _kill_after_first_checkpoint(run, proc, signal.SIGKILL, random.Random(0))
    folder = run / json.loads((run / "checkpoint.json").read_text())["folder"]
    assert not (folder / "replay.pkl").exists()
    import cloudpickle

    saved = cloudpickle.loads((folder / "state.pkl").read_bytes())
    assert saved["algo"] == "ppo"
    np.random.seed(12345)  # whatever the process held before
    ckpt = load_checkpoint(run)
    now = np.random.get_state()
    assert np.array_equal(now[1], saved["rng"]["numpy"][1]) and now[2] == saved["rng"]["numpy"][2]
    assert type(ckpt.model).__name__ == "MoEPPO" and ckpt.model.num_timesteps == ckpt.step
    ckpt.model.env.close()
