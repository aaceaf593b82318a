"""Greedy evaluation of an agent on every task of a suite.

One environment per (task, episode) (``fixed_task=i`` for suites), all of them stepped in lock-step, so
the policy runs one forward pass per step on every live observation at once. Why not one task after the
other: the per-step cost is the policy's call overhead, not its arithmetic, so a CRL evaluation of 4
tasks x 5 episodes costs about what one task does (a dense evaluation curve, ~40 points per run, would
otherwise slow training by about 30%; see docs/moe-dqn.md, "Evaluation cost"). Each environment's seed
depends only on its task's position and episode index, so a task evaluates the same alone or with others.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import BasePolicy

from moerl.rl.envs.registration import make


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


def run_task_episodes(
    predict: Callable[[np.ndarray], np.ndarray],
    factories: dict[str, Callable[[], gym.Env]],
    n_episodes: int,
    seed: int,
    max_observations: int = 512,
) -> list[TaskEvaluation]:
    """``n_episodes`` episodes of every task, all environments stepped together with one batched ``predict``.

    Task ``k``'s episode ``i`` runs in its own environment reset with seed ``seed + 1000 * k + i``.
    ``observations`` of a task: the first ``max_observations`` it visited (whole steps, in step order).
    """
    names = list(factories)
    envs: list[gym.Env] = []
    task_of: list[int] = []
    try:
        first = []
        for k, name in enumerate(names):
            for i in range(n_episodes):
                envs.append(factories[name]())
                task_of.append(k)
                first.append(envs[-1].reset(seed=seed + 1000 * k + i)[0])
        obs = np.stack(first)
        task_ids = np.asarray(task_of)
        n = len(envs)
        done = np.zeros(n, dtype=bool)
        returns = np.zeros(n)
        lengths = np.zeros(n, dtype=int)
        seen: list[list[np.ndarray]] = [[] for _ in names]
        n_seen = np.zeros(len(names), dtype=int)
        while not done.all():
            live = np.flatnonzero(~done)
            live_obs = obs[live]
            actions = predict(live_obs)
            for k in np.flatnonzero(n_seen < max_observations).tolist():
                rows = live_obs[task_ids[live] == k]
                seen[k].append(rows)
                n_seen[k] += len(rows)
            for a, i in zip(actions, live.tolist(), strict=True):
                o, r, term, trunc, _ = envs[i].step(a)
                obs[i] = o
                returns[i] += float(r)
                lengths[i] += 1
                done[i] = term or trunc
        results = []
        for k, name in enumerate(names):
            mine = task_ids == k
            observations = (np.concatenate(seen[k])[:max_observations] if seen[k]
                            else np.zeros((0, *obs.shape[1:]), dtype=obs.dtype))
            results.append(TaskEvaluation(name, returns[mine].tolist(), lengths[mine].tolist(), observations))
        return results
    finally:
        for env in envs:
            env.close()


def task_env_factories(env_id: str, env_kwargs: dict, task_names: tuple[str, ...]) -> dict[str, Callable[[], gym.Env]]:
    """A factory per task: ``make(env_id, fixed_task=i)`` for suites, the env itself otherwise."""
    if not task_names:
        return {env_id: lambda: make(env_id, **env_kwargs)}
    return {name: functools.partial(make, env_id, **{**env_kwargs, "fixed_task": i})
            for i, name in enumerate(task_names)}


def greedy_predictor(model) -> Callable[[np.ndarray], np.ndarray]:
    """Greedy actions of ``model`` for a batch of observations.

    An SB3 model's policy is called directly (``policy._predict``, the hook every SB3 policy implements,
    in eval mode, without gradients): ``model.predict`` re-checks the observation space and switches the
    policy's training mode on every call, which costs about as much as the small network's forward pass.
    Anything else with SB3's ``predict`` signature is called through it.
    """
    policy = getattr(model, "policy", None)
    if not isinstance(policy, BasePolicy):
        return lambda obs: model.predict(obs, deterministic=True)[0]
    policy.set_training_mode(False)

    def predict(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            actions = policy._predict(torch.as_tensor(obs, device=policy.device), deterministic=True)
        return actions.cpu().numpy().reshape(-1)

    return predict


def evaluate_tasks(model, factories: dict[str, Callable[[], gym.Env]], n_episodes: int, seed: int) -> list[TaskEvaluation]:
    """Greedy returns of ``model`` (anything with SB3's ``predict``) on each task (see :func:`run_task_episodes`)."""
    return run_task_episodes(greedy_predictor(model), factories, n_episodes, seed)
