"""Reading a task suite's declared attributes from any env a user may hold.

moerl's suites declare their structure as attributes (``num_tasks``, ``task_onehot``, ``task_names``,
``valid_actions``, ``obs_bounds``, ``task_obs_bounds``, ``return_bounds``, ``schedule()``, ``block_steps``;
see :class:`moerl.rl.envs.suite.TaskSuiteEnv`). Gymnasium 1.x wrappers do not forward attributes, and SB3
vector envs hold their envs one level further down, so every reader goes through :func:`env_attr`, which
handles both (duck-typed, so this layer does not import SB3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _is_vec_env(env: Any) -> bool:
    return hasattr(env, "num_envs") and hasattr(env, "get_attr") and not hasattr(env, "get_wrapper_attr")


def env_attr(env: Any, name: str, default: Any = None) -> Any:
    """``name`` read through wrappers of a Gymnasium env, or from the first env of an SB3 VecEnv."""
    try:
        if _is_vec_env(env):
            return env.get_attr(name, indices=[0])[0]
        return env.get_wrapper_attr(name)
    except AttributeError:
        return default


def normalized_return(value: float, bounds: tuple[float, float]) -> float:
    """A return mapped to [0, 1] by its task's (low, high) bounds, clipped (the continual metrics' scale)."""
    low, high = bounds
    return float(np.clip((value - low) / (high - low), 0.0, 1.0))


@dataclass(frozen=True)
class SuiteInfo:
    """What a training loop needs to know of a suite; empty for a plain Gymnasium env."""

    task_names: tuple[str, ...] = ()
    #: task name -> (low, high) episode return used to normalise returns to [0, 1].
    return_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: CRL: one entry per block (task index, cycle...); empty for MTRL and plain envs.
    schedule: tuple[dict, ...] = ()
    #: CRL: env steps per block; 0 otherwise.
    block_steps: int = 0


def suite_info(env: Any) -> SuiteInfo:
    """The :class:`SuiteInfo` of ``env`` (Gymnasium env, wrapped or not, or an SB3 VecEnv)."""
    names = tuple(env_attr(env, "task_names") or ())
    bounds = env_attr(env, "return_bounds")
    by_task = ({n: (float(b[0]), float(b[1])) for n, b in zip(names, np.asarray(bounds), strict=True)}
               if bounds is not None and names else {})
    schedule_fn = env_attr(env, "schedule")
    schedule = tuple(schedule_fn()) if callable(schedule_fn) else ()
    block = int(env_attr(env, "block_steps") or 0) if schedule else 0
    return SuiteInfo(names, by_task, schedule, block)
