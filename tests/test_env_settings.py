"""Every env setting a run records either takes effect on both engines or is refused before anything runs.

Issue 22: the batched engine dropped ``env_kwargs.max_episode_steps`` and ``render_mode`` (recorded, not applied),
``env_kwargs.tasks=mountaincar`` trained MountainCar under the name ``cartpole-crl``, ids needing a missing
package failed mid-run with a traceback, and sizes no machine holds reached the allocator.
"""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from moerl.core.errors import ConfigError
from moerl.core.seeding import parse_seeds
from moerl.rl.batched_runs import suite_spec
from moerl.rl.config import build_config, validate
from moerl.rl.envs.batched import BatchedTaskSuite
from moerl.rl.envs.registration import check_env_kwargs
from moerl.rl.experiment import make_env

LIMIT = 50


def _balance(obs) -> int:
    """A CartPole controller that keeps the pole up for hundreds of steps (pole angle plus its velocity)."""
    return int(obs[2] + obs[3] > 0)


def test_max_episode_steps_is_the_same_episode_limit_on_both_engines():
    config = build_config(None, {"env": "cartpole-mtrl"})
    config.env_kwargs = {"max_episode_steps": LIMIT}
    validate(config)

    env = make_env(config)  # the SB3 path
    obs, _ = env.reset(seed=0)
    length, terminated, truncated = 0, False, False
    while not (terminated or truncated) and length < 10 * LIMIT:
        obs, _, terminated, truncated, _ = env.step(_balance(obs))
        length += 1
    assert (length, truncated) == (LIMIT, True)
    sb3_bounds = env.get_wrapper_attr("return_bounds")
    env.close()

    spec = suite_spec("moerl/CartPole-MTRL-v0", config.env_kwargs)  # the batched engine
    np.testing.assert_array_equal(spec.return_bounds, sb3_bounds)
    np.testing.assert_array_equal(spec.return_bounds, [[0.0, LIMIT]] * 4)
    batched = BatchedTaskSuite(spec, seeds=[0])
    obs, length, done, truncated = batched.reset(), 0, False, False
    while not done and length < 10 * LIMIT:
        out = batched.step(torch.tensor([_balance(obs[0])]))
        obs, done, truncated, length = out.obs, bool(out.done[0]), bool(out.truncated[0]), length + 1
    assert (length, truncated) == (LIMIT, True)


def _train(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moerl", "train", "--timesteps", "600", "--no-progress",
                           "--logdir", "runs", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)


CASES = [
    (["--env", "cartpole-mtrl", "--set", "env_kwargs.render_mode=rgb_array"], "env_kwargs.render_mode"),
    (["--env", "cartpole-mtrl", "--seeds", "0-1", "--engine", "batched", "--set", "env_kwargs.render_mode=human"],
     "env_kwargs.render_mode"),
    (["--env", "cartpole-crl", "--set", "env_kwargs.tasks=mountaincar"], "not tasks of 'cartpole-crl'"),
    (["--env", "CartPole-v1", "--set", "eval.reference_runs.cartpole=5"], "eval.reference_runs.cartpole must be"),
    (["--env", "CartPole-v1", "--set", "eval.reference_runs=[1]"], "eval.reference_runs"),
    (["--env", "CartPole-v1", "--set", "dqn.batch_size=1000000000000"], "sized by dqn.batch_size"),
    (["--env", "CartPole-v1", "--arch", "big", "--router", "softmoe", "--set", "network.slots_per_expert=100000000"],
     "network.slots_per_expert"),
    (["--env", "cartpole-mtrl", "--seeds", "0-65535", "--set", "dqn.buffer_size=100"],
     "65,536 seeds of this config need"),
    (["--env", "CartPole-v1", "--seeds", ",".join(["0-60000"] * 3000)], "--seeds '0-60000,0-60000"),
]


@pytest.mark.parametrize("args,message", CASES, ids=[c[1][:30] for c in CASES])
def test_settings_no_engine_would_honour_are_refused_in_one_line(tmp_path, args, message):
    done = _train(tmp_path, *args)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moerl: error: ") and message in lines[0], done.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


def test_a_subset_of_the_suites_own_tasks_is_accepted_and_trained(tmp_path):
    done = _train(tmp_path, "--env", "cartpole-crl", "--set", "env_kwargs.tasks=[cartpole-default,cartpole-mirror]",
                  "--set", "env_kwargs.block_steps=300", "--run-name", "two")
    assert done.returncode == 0, done.stderr[-2000:]
    tasks = {line.split(",")[1] for line in (tmp_path / "runs/two/eval.csv").read_text().splitlines()[1:]}
    assert tasks == {"cartpole-default", "cartpole-mirror"}


def test_an_id_whose_package_is_missing_is_refused_before_anything_runs():
    gym.register("moerl-test/NeedsMissingPackage-v0", entry_point="moerl_no_such_package.envs:Env")
    try:
        with pytest.raises(ConfigError, match="needs a package that is not installed .*moerl_no_such_package"):
            check_env_kwargs("moerl-test/NeedsMissingPackage-v0", {})
    finally:
        del gym.registry["moerl-test/NeedsMissingPackage-v0"]


def test_repeated_seed_ranges_are_refused_before_they_are_expanded():
    with pytest.raises(ConfigError, match="more than"):
        parse_seeds(",".join(["0-65000"] * 10_000))
