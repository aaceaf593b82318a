"""Evaluation of every task in one batch (both engines) equals evaluating the tasks one at a time: the
same returns, episode lengths, observations and router usage, on a suite with two games and action masks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.envs.batched import BatchedTaskSuite
from moerl.rl.envs.suite import TaskSuiteEnv
from moerl.rl.evaluation import greedy_predictor, run_task_episodes, task_env_factories
from moerl.rl.experiment import DQNRunConfig, build_model, validate

torch.set_num_threads(1)
NETWORK = {"arch": "big", "router": "softmoe", "hidden": 16}


def _sb3_model(env_id: str, seed: int):
    cfg = DQNRunConfig(env=env_id, seed=seed, device="cpu")
    for key, value in NETWORK.items():
        setattr(cfg.network, key, value)
    model = build_model(validate(cfg), gym.make(env_id))
    model.learn(600)  # some updates: Q-values that differ between tasks and episodes of different lengths
    return model


@pytest.mark.parametrize("env_id", ["moerl/ClassicControl-MTRL-v0", "moerl/CartPole-CRL-v0"])
def test_sb3_path_all_tasks_together_equal_each_task_alone(env_id):
    model = _sb3_model(env_id, seed=3)
    names = gym.make(env_id).unwrapped.task_names
    factories = task_env_factories(env_id, {}, names)
    predict = greedy_predictor(model)
    together = run_task_episodes(predict, factories, n_episodes=3, seed=40, max_observations=64)
    assert [r.task for r in together] == list(names)
    for k, name in enumerate(names):
        # Task k alone, seeded as it is in the batch (seed + 1000 * k)
        (alone,) = run_task_episodes(predict, {name: factories[name]}, 3, seed=40 + 1000 * k, max_observations=64)
        assert together[k].returns == alone.returns and together[k].lengths == alone.lengths, name
        assert np.array_equal(together[k].observations, alone.observations), name
        assert len(alone.observations) == min(64, sum(alone.lengths))
    assert len({tuple(r.returns) for r in together}) > 1  # the tasks really differ: the check can fail


def test_greedy_predictor_is_sb3_predict():
    model = _sb3_model("moerl/ClassicControl-MTRL-v0", seed=1)
    env = gym.make("moerl/ClassicControl-MTRL-v0")
    obs = np.stack([env.reset(seed=s)[0] for s in range(32)])
    assert np.array_equal(greedy_predictor(model)(obs), model.predict(obs, deterministic=True)[0])


@pytest.mark.parametrize("suite_args", [("classic", "mtrl"), ("cartpole", "crl")])
def test_batched_engine_all_tasks_together_equal_each_task_alone(suite_args):
    suite = TaskSuiteEnv(*suite_args)
    agent = BatchedDQN(suite, [0, 5], NETWORK)
    agent.learn(600)
    tasks = list(range(suite.num_tasks))
    usage: dict = {}
    together = agent.evaluate(suite, 3, seed=11, usage=usage, tasks=tasks)
    assert together.shape == (2, suite.num_tasks, 3) and usage["big"].shape == (2, suite.num_tasks, 4)
    for k in tasks:
        alone_usage: dict = {}
        alone = agent.evaluate(TaskSuiteEnv(*suite_args, fixed_task=k), 3, seed=11, usage=alone_usage)
        # Returns are sums of discrete rewards under greedy actions: equal unless a float rounding flips an
        # argmax. Usage is a mean of softmax weights computed over other batch shapes (the evaluation batch
        # holds every task, or one), and BLAS kernels differ by shape on some CPUs (AVX-512/AMX): float32
        # tolerance, not bit-equality.
        assert np.array_equal(together[:, k], alone), k
        np.testing.assert_allclose(usage["big"][:, k], alone_usage["big"], rtol=1e-5, atol=1e-6)
    assert len(np.unique(together.mean(axis=2))) > 1  # tasks and seeds differ: the check can fail


def test_fixed_tasks_keep_their_task_and_are_checked():
    suite = TaskSuiteEnv("classic", "crl")
    env = BatchedTaskSuite(suite, [1, 2, 3], fixed_tasks=[7, 0, 4])
    env.reset()
    for _ in range(300):  # through several episode ends
        out = env.step(torch.zeros(3, dtype=torch.long))
        assert out.task_id.tolist() == [7, 0, 4]
    with pytest.raises(ValueError, match=r"fixed_tasks: one task index in \[0, 8\)"):
        BatchedTaskSuite(suite, [1, 2], fixed_tasks=[0, 8])
    with pytest.raises(ValueError, match="per environment"):
        BatchedTaskSuite(suite, [1, 2], fixed_tasks=[0])
