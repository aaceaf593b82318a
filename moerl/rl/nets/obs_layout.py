"""How an observation vector is laid out, and how a Q-network reads it.

moerl's task suites append a one-hot task id to the game's observation (``specs``: the task-id
convention). :class:`ObsLayout` says where the parts are, the bounds that rescale the game part to
[-1, 1] (dopamine's classic-control convention), and which actions each task allows (the mixed
CartPole + MountainCar suite has an action that CartPole lacks), and, for suites whose game part is a grid
(MinAtar), the grid's shape, which the conv torso (``network.torso: conv``) reads. It is plain data, stored with
the saved policy, so both engines (the SB3 policy and the batched engine) build the same network from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from moerl.core.errors import ConfigError
from moerl.rl.envs.attributes import env_attr


@dataclass(frozen=True)
class ObsLayout:
    """``obs = [game part (base_dim) | one-hot task id (num_tasks, may be 0)]``."""

    base_dim: int
    num_tasks: int = 0
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    #: (num_tasks, n_actions) table of allowed actions; None = every action always allowed.
    valid_actions: tuple[tuple[bool, ...], ...] | None = None
    task_names: tuple[str, ...] = ()
    #: Per-task (num_tasks, base_dim) bounds, when tasks differ (the mixed suite pads MountainCar's 2
    #: numbers to CartPole's 4: one shared scale would squash MountainCar's +-0.07 velocity by +-5).
    task_low: tuple[tuple[float, ...], ...] | None = None
    task_high: tuple[tuple[float, ...], ...] | None = None
    #: ``(H, W, C)`` when the game part is a grid flattened in (row, column, channel) order (``base_dim = H * W *
    #: C``; the suite's ``grid_shape``, e.g. MinAtar's ``(10, 10, C)``); None for other observations. Read by the
    #: conv torso; layouts saved before it existed load with None.
    grid_shape: tuple[int, int, int] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ObsLayout:
        d = dict(data)
        for key in ("low", "high", "task_names"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        for key in ("task_low", "task_high"):
            if d.get(key) is not None:
                d[key] = tuple(tuple(float(v) for v in row) for row in d[key])
        if d.get("valid_actions") is not None:
            d["valid_actions"] = tuple(tuple(bool(v) for v in row) for row in d["valid_actions"])
        if d.get("grid_shape") is not None:
            d["grid_shape"] = tuple(int(v) for v in d["grid_shape"])
        return cls(**d)


def layout_for_env(env: Any) -> ObsLayout:
    """Read the layout from a moerl task suite, or infer it for any Box-observation env.

    ``env`` may be a Gymnasium env (wrapped or not) or an SB3 VecEnv: :class:`moerl.rl.sb3.MoEDQN` calls
    this on the env it was given, so users never build the layout by hand.
    """
    space = env.observation_space
    # A flat Box, recognised by what it has (bounds and one dimension): this module imports no Gymnasium.
    if getattr(space, "low", None) is None or len(getattr(space, "shape", None) or ()) != 1:

        raise ConfigError(
            f"MoE DQN needs a flat Box observation space, got {space}; image or dict observations are not supported yet"
        )
    num_tasks = int(env_attr(env, "num_tasks") or 0) if env_attr(env, "task_onehot") else 0
    base_dim = int(space.shape[0]) - num_tasks
    bounds = env_attr(env, "obs_bounds")
    if bounds is not None:
        low, high = (tuple(float(v) for v in np.asarray(b).reshape(-1)) for b in bounds)
    else:
        low, high = _default_bounds(env, space, base_dim)
    valid = env_attr(env, "valid_actions")
    valid_actions = None
    if valid is not None and num_tasks:
        valid_actions = tuple(tuple(bool(v) for v in row) for row in np.asarray(valid))
    names = env_attr(env, "task_names")
    task_low = task_high = None
    per_task = env_attr(env, "task_obs_bounds")
    if per_task is not None and num_tasks:
        per_task = np.asarray(per_task, dtype=float)  # (num_tasks, 2, base_dim)
        if not np.allclose(per_task, per_task[:1]):
            task_low = tuple(tuple(row) for row in per_task[:, 0].tolist())
            task_high = tuple(tuple(row) for row in per_task[:, 1].tolist())
    grid = env_attr(env, "grid_shape")
    grid_shape = None
    if grid is not None:
        grid_shape = (int(grid[0]), int(grid[1]), int(grid[2]))
        if int(np.prod(grid_shape)) != base_dim:
            raise ConfigError(f"the env's grid_shape {grid_shape} does not fill its {base_dim} observation features")
    return ObsLayout(base_dim, num_tasks, low, high, valid_actions, tuple(names) if names else (),
                     task_low, task_high, grid_shape)


def _default_bounds(env: Any, space: Any, base_dim: int):
    from moerl.rl.envs.games import GAMES

    spec = env_attr(env, "spec")
    spec_id = spec.id if spec is not None else ""
    for game in GAMES.values():  # dopamine's bounds for the games moerl's suites are built on
        low, high = game.obs_bounds
        if spec_id.split("-v")[0] == game.gym_id.split("-v")[0] and len(low) == base_dim:
            return tuple(low), tuple(high)
    lo, hi = space.low[:base_dim], space.high[:base_dim]
    if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo):
        return tuple(float(v) for v in lo), tuple(float(v) for v in hi)
    return None, None


def check_layout_fits(network: Any, layout: ObsLayout, env_name: str) -> None:
    """Refuse (one line) a network the observation layout cannot feed: the ``hardcoded`` router routes by
    task id, so it needs a task one-hot and one expert per task; the conv torso reads a grid, so it needs a
    suite with one. Checked by every engine (the SB3 path's :class:`~moerl.rl.sb3.moe_dqn.MoEDQN`, the batched
    engine) before anything is trained."""

    if getattr(network, "torso", "mlp") == "conv" and layout.grid_shape is None:
        raise ConfigError(no_grid_message(env_name))
    if network.router != "hardcoded" or not network.uses_moe:
        return
    if layout.num_tasks == 0:
        raise ConfigError(
            f"router 'hardcoded' routes by task id, but env '{env_name}' has no task one-hot; "
            "use a task suite (e.g. cartpole-mtrl, cartpole-crl)"
        )
    if network.experts != layout.num_tasks:
        raise ConfigError(
            f"router 'hardcoded' needs one expert per task: env '{env_name}' has {layout.num_tasks} tasks "
            f"but --experts is {network.experts}"
        )


def no_grid_message(env_name: str) -> str:
    """The one line that refuses ``torso: conv`` on an env whose observations have no grid."""
    return (f"network.torso 'conv' reads a grid, but env '{env_name}' has none (flat features); use a suite with "
            "a grid (minatar-mtrl, minatar-crl) or torso 'mlp'")
