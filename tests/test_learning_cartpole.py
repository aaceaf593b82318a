"""Learning: dense and an MoE arch beat a random policy on CartPole-v1 within a small budget.

Random play scores about 22 on CartPole-v1. Judged over three seeds by the median greedy return,
never on one lucky seed.
"""

import statistics

import gymnasium as gym
import pytest
from stable_baselines3.common.monitor import Monitor

from moerl.rl.evaluation import evaluate_tasks, task_env_factories
from moerl.rl.experiment import DQNRunConfig, build_model, validate

RANDOM_RETURN = 22.0


def greedy_return(arch: str, router: str, seed: int, steps: int = 4000) -> float:
    cfg = DQNRunConfig(env="CartPole-v1", seed=seed, device="cpu")
    cfg.network.arch, cfg.network.router = arch, router  # MoENetworkConfig is plain, mutable data
    model = build_model(validate(cfg), Monitor(gym.make("CartPole-v1")))
    model.learn(steps)
    (res,) = evaluate_tasks(model, task_env_factories("CartPole-v1", {}, ()), n_episodes=5, seed=100 + seed)
    return res.mean_return


@pytest.mark.slow
@pytest.mark.parametrize("arch,router", [("dense", "softmoe"), ("big", "softmoe")])
def test_beats_random_by_a_wide_margin_over_seeds(arch, router):
    returns = [greedy_return(arch, router, seed) for seed in (0, 1, 2)]
    assert statistics.median(returns) > 4 * RANDOM_RETURN, returns
