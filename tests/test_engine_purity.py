"""The batched engine stands on pure torch: importing and running it loads no Stable-Baselines3."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
from moerl.rl.engine.batched_dqn import BatchedDQN
from moerl.rl.envs.suite import TaskSuiteEnv
agent = BatchedDQN(TaskSuiteEnv("cartpole", "crl"), [0, 1], {"arch": "big", "router": "softmoe", "hidden": 8},
                   metrics_interval=100)
agent.learn(600)
returns = agent.evaluate(TaskSuiteEnv("cartpole", "crl"), 1, seed=0)
print(agent.num_timesteps, returns.shape, "stable_baselines3" in sys.modules)
"""


def test_the_batched_engine_imports_and_trains_without_stable_baselines3():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["600", "(2,", "1)", "False"], out
