"""What the batched side reads of a task suite: the description both suite implementations share.

:class:`~moerl.rl.envs.suite.TaskSuiteEnv` (the Gymnasium reference) validates a suite's settings and
exposes them; the batched torch dynamics (:class:`~moerl.rl.envs.batched.BatchedTaskSuite`) and the
batched engine are built from those settings alone. Declaring them here as a protocol keeps the torch side
free of Gymnasium (an import contract): any object with these attributes describes a suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class SuiteSpec(Protocol):
    """A validated task suite: its tasks, setting, schedule parameters and declared bounds."""

    mode: str
    tasks: Sequence[Any]
    task_names: tuple[str, ...]
    num_tasks: int
    task_onehot: bool
    task_probs: np.ndarray
    block_steps: int
    cycles: int
    order: Any
    fixed_task: int | None
    base_obs_dim: int
    valid_actions: np.ndarray
    return_bounds: np.ndarray
    obs_bounds: tuple[np.ndarray, np.ndarray]
    observation_space: Any

    @property
    def episode_limits(self) -> np.ndarray:
        """Each task's episode length limit (truncation), ``(num_tasks,)``."""
        ...

    def schedule(self) -> list[dict[str, int | str]]:
        """The CRL schedule, one dict per block; [] otherwise."""
        ...
