"""Greedy evaluation of an agent on every task of a suite.

One environment per task (``fixed_task=i``), ``n_episodes`` copies stepped in lock-step so that the
policy runs on a batch of observations at once (a CRL evaluation of 4 tasks x 5 episodes is 20
single-observation forward passes per step otherwise).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np


@dataclass
class TaskEvaluation:
    """Returns of ``n`` greedy episodes on one task, plus observations seen (for router usage)."""

    task: str
    returns: list[float]
    lengths: list[int]
    observations: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0,)))

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        return float(np.std(self.returns))


def run_episodes(
    predict: Callable[[np.ndarray], np.ndarray],
    make_env: Callable[[], gym.Env],
    n_episodes: int,
    seed: int,
    max_observations: int = 512,
) -> tuple[list[float], list[int], np.ndarray]:
    """Run ``n_episodes`` episodes (one per env copy, seeds ``seed..seed+n-1``) with a batched policy."""
    envs = [make_env() for _ in range(n_episodes)]
    try:
        obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
        done = np.zeros(n_episodes, dtype=bool)
        returns = np.zeros(n_episodes)
        lengths = np.zeros(n_episodes, dtype=int)
        seen: list[np.ndarray] = []
        n_seen = 0
        while not done.all():
            live = np.flatnonzero(~done)
            actions = predict(obs[live])
            if n_seen < max_observations:
                seen.append(obs[live])
                n_seen += len(live)
            for a, i in zip(actions, live, strict=True):
                o, r, term, trunc, _ = envs[i].step(a)
                obs[i] = o
                returns[i] += float(r)
                lengths[i] += 1
                done[i] = term or trunc
        observations = np.concatenate(seen)[:max_observations] if seen else np.zeros((0, *obs.shape[1:]))
        return returns.tolist(), lengths.tolist(), observations
    finally:
        for env in envs:
            env.close()


def task_env_factories(env_id: str, env_kwargs: dict, task_names: tuple[str, ...]) -> dict[str, Callable[[], gym.Env]]:
    """A factory per task: ``gym.make(env_id, fixed_task=i)`` for suites, the env itself otherwise."""
    if not task_names:
        return {env_id: lambda: gym.make(env_id, **env_kwargs)}
    return {name: functools.partial(gym.make, env_id, **{**env_kwargs, "fixed_task": i})
            for i, name in enumerate(task_names)}


def evaluate_tasks(model, factories: dict[str, Callable[[], gym.Env]], n_episodes: int, seed: int) -> list[TaskEvaluation]:
    """Greedy returns of ``model`` (anything with SB3's ``predict``) on each task."""

    def predict(obs: np.ndarray) -> np.ndarray:
        return model.predict(obs, deterministic=True)[0]

    results = []
    for k, (name, factory) in enumerate(factories.items()):
        returns, lengths, observations = run_episodes(predict, factory, n_episodes, seed + 1000 * k)
        results.append(TaskEvaluation(name, returns, lengths, observations))
    return results
