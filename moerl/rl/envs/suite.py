"""One environment class for multi-task (MTRL) and continual (CRL) RL over a list of tasks.

:class:`TaskSuiteEnv` holds one stock Gymnasium environment per task and forwards each episode to the
current task's. What does not depend on the games (which task runs when, the step and episode bookkeeping,
truncation, the one-hot task id, the action masks, the ``info`` keys) is :class:`SuiteEnv`, which the MinAtar
suites (:class:`moerl.rl.envs.minatar_suite.MinAtarSuiteEnv`) share. Which task is current is the only thing
MTRL and CRL disagree on:

* ``mode="mtrl"``: at every reset a task is drawn from ``task_probs`` (uniform by default) with the
  env's own seeded generator ``self.np_random``.
* ``mode="crl"``: a schedule of blocks, each ``block_steps`` environment steps of one task, in ``order``
  (``"sequential"``, ``"reverse"``, ``"random"`` = a seeded permutation per cycle, or an explicit list
  of task names/indices), ``cycles`` times. A switch happens only at an episode boundary: the first
  reset after the step count reaches the block's nominal end ``(block + 1) * block_steps``. Blocks are
  anchored to that nominal grid (not to their actual start), so a run of
  ``len(schedule()) * block_steps`` steps covers every block; a block that starts late because the
  previous episode ran over is shorter by that overrun. No block is ever skipped. After the last block
  the last task keeps running and ``info["schedule_done"]`` is True.
* ``fixed_task`` pins one task (per-task evaluation); the CRL schedule is then not used: ``schedule()``
  returns ``[]`` and the CRL ``info`` keys are absent.

Reset with a seed re-seeds ``np_random`` and, in CRL, restarts the schedule from step 0 (and redraws a
random order), so that a seed fully determines a run. Unseeded resets continue the run.

Observations are the task's base observation padded with zeros to the largest base size among the
tasks (CartPole 4, MountainCar 2), then, with ``task_onehot=True``, a one-hot task id. The action space
is ``Discrete`` of the largest base action count; an action the current task lacks (2 on CartPole) is
mapped to ``action % n_valid`` and flagged with ``info["invalid_action"]=True``; ``valid_actions`` lets
agents mask instead. Episodes are truncated at the base game's usual limit (CartPole 500, MountainCar
200) unless ``max_episode_steps`` says otherwise; Gymnasium's ``TimeLimit`` is not needed on top.
Note that ``gym.make(id, max_episode_steps=N)`` is consumed by Gymnasium itself, which then adds its own
``TimeLimit(N)`` outside: that can shorten episodes but not lengthen them; pass the keyword to the class
(or to ``gym.register``) to change the suite's own limit. A run's ``env_kwargs.max_episode_steps`` reaches the
class (:func:`moerl.rl.envs.registration.make`), so both engines run the same episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from moerl.core.errors import ConfigError, check_choice
from moerl.rl.envs.gym_games import build_game
from moerl.rl.envs.schedule import Block, build_schedule, check_order, check_task_probs, task_index
from moerl.rl.envs.tasks import Task, resolve_tasks

MODES = ("mtrl", "crl")
DEFAULT_BLOCK_STEPS = 10_000


def _check_count(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


class SuiteEnv(gym.Env[np.ndarray, np.int64]):
    """What every moerl task suite shares, whatever its games (see the module docs): the MTRL draws, the CRL
    schedule, ``fixed_task``, step and episode counting, truncation at each task's episode limit, invalid
    actions (mapped ``action % n_valid`` and flagged), the one-hot task id and the ``info`` keys.

    A subclass brings the games. In its ``__init__`` it resolves its tasks (objects with a ``name``), calls
    ``super().__init__`` with their names and the setting's keywords, then calls :meth:`_set_actions` and
    :meth:`_set_limits` and sets ``observation_space`` (whose first ``base_obs_dim`` entries are the game
    part, then the one-hot), ``base_obs_dim``, ``obs_bounds``, ``task_obs_bounds`` and ``return_bounds``. It
    implements :meth:`_reset_game`, :meth:`_step_game` and :meth:`_write_game_obs`.
    """

    # Set by the subclass (see the class docstring).
    tasks: tuple[Any, ...]
    base_obs_dim: int
    observation_space: spaces.Box
    obs_bounds: tuple[np.ndarray, np.ndarray]
    task_obs_bounds: np.ndarray
    return_bounds: np.ndarray

    def __init__(
        self,
        task_names: tuple[str, ...],
        mode: str,
        *,
        task_probs: Sequence[float] | None,
        block_steps: int | None,
        cycles: int | None,
        order: str | Sequence[int | str] | None,
        task_onehot: bool,
        fixed_task: int | str | None,
        render_mode: str | None,
    ) -> None:
        self.mode = check_choice("mode", mode, MODES)
        self.task_names = task_names
        self.num_tasks = len(task_names)
        if not isinstance(task_onehot, (bool, np.bool_)):
            raise ConfigError(f"task_onehot must be true or false, got {task_onehot!r}")
        self.task_onehot = bool(task_onehot)
        if render_mode is not None:
            check_choice("render_mode", render_mode, self.metadata["render_modes"])
        self.render_mode = render_mode

        if self.mode == "mtrl":
            for name, value in (("block_steps", block_steps), ("cycles", cycles), ("order", order)):
                if value is not None:
                    raise ConfigError(f"{name}={value!r} only applies to mode 'crl', not 'mtrl'")
        elif task_probs is not None:
            raise ConfigError(f"task_probs={list(task_probs)!r} only applies to mode 'mtrl', not 'crl'")
        self.task_probs = check_task_probs(task_probs, self.num_tasks)
        self.block_steps = _check_count(
            "block_steps", DEFAULT_BLOCK_STEPS if block_steps is None else block_steps
        )
        self.cycles = _check_count("cycles", 1 if cycles is None else cycles)
        self.order = check_order("sequential" if order is None else order, self.task_names)
        self.fixed_task = (
            None if fixed_task is None else task_index(fixed_task, self.task_names, "fixed_task")
        )

        self._schedule = self._build_schedule()
        self._block = 0
        self._block_start = 0
        self._total_steps = 0
        self._episode_steps = 0
        self._needs_reset = True
        self._started = False
        self.current_task = self._first_task()

    def _set_actions(self, n_valid: Sequence[int]) -> None:
        """``Discrete`` of the largest action count; task ``i`` allows actions ``0 .. n_valid[i] - 1``."""
        self._n_valid = np.array(n_valid)
        self.action_space = spaces.Discrete(int(self._n_valid.max()))
        self.valid_actions = np.arange(self.action_space.n)[None, :] < self._n_valid[:, None]

    def _set_limits(self, defaults: Sequence[int], max_episode_steps: int | None) -> None:
        """Each task's episode limit: its game's default, or ``max_episode_steps`` for every task."""
        self._limits = np.array(
            [
                _check_count("max_episode_steps", max_episode_steps) if max_episode_steps is not None else d
                for d in defaults
            ]
        )

    @property
    def episode_limits(self) -> np.ndarray:
        """Each task's episode length limit (truncation), ``(num_tasks,)``."""
        return self._limits

    # ------------------------------------------------------------------ what a subclass implements
    def _reset_game(self, task: int, options: dict[str, Any] | None) -> np.ndarray:
        """Start an episode of ``task``'s game with randomness from ``self.np_random``; its observation."""
        raise NotImplementedError

    def _step_game(self, task: int, action: int) -> tuple[np.ndarray, float, bool]:
        """One step of ``task``'s game under the task's action ``action`` (``0 <= action < n_valid``):
        (observation, reward, terminated)."""
        raise NotImplementedError

    def _write_game_obs(self, out: np.ndarray, game_obs: np.ndarray) -> None:
        """Write the game's observation into ``out``, the zeroed game part (``base_obs_dim``) of the suite's."""
        raise NotImplementedError

    # ------------------------------------------------------------------ schedule
    def _build_schedule(self) -> list[Block]:
        if self.mode != "crl" or self.fixed_task is not None:
            return []
        rng = self.np_random if self.order == "random" else None
        return build_schedule(self.order, self.task_names, self.block_steps, self.cycles, rng)

    def _first_task(self) -> int:
        if self.fixed_task is not None:
            return self.fixed_task
        return self._schedule[0].task_id if self._schedule else 0

    @property
    def _crl(self) -> bool:
        return bool(self._schedule)

    # ------------------------------------------------------------------ public API
    def schedule(self) -> list[dict[str, int | str]]:
        """The CRL schedule, one dict per block (block, cycle, task_id, task_name, start_step); [] otherwise."""
        return [b.as_dict() for b in self._schedule]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None and self._crl:
            self._schedule = self._build_schedule()
            self._block = self._block_start = self._total_steps = 0
        elif self._crl and self._started:
            self._advance_block()
        self._started = True
        self.current_task = self._pick_task()

        obs = self._reset_game(self.current_task, options)
        self._episode_steps = 0
        self._needs_reset = False
        return self._observation(obs), self._info(invalid_action=False)

    def step(self, action: np.int64 | int) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError(f"{type(self).__name__}: call reset() before step() (and after an episode ends)")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        n_valid = int(self._n_valid[self.current_task])
        invalid = int(action) >= n_valid

        obs, reward, terminated = self._step_game(self.current_task, int(action) % n_valid)
        self._episode_steps += 1
        self._total_steps += 1
        truncated = not terminated and self._episode_steps >= self._limits[self.current_task]
        self._needs_reset = bool(terminated or truncated)
        return self._observation(obs), float(reward), bool(terminated), bool(truncated), self._info(invalid)

    # ------------------------------------------------------------------ internals
    def _advance_block(self) -> None:
        """At an episode boundary, move to the next block once the current one's nominal end is reached."""
        nominal_end = (self._block + 1) * self.block_steps
        if self._total_steps >= nominal_end and self._block < len(self._schedule) - 1:
            self._block += 1
            self._block_start = self._total_steps

    def _pick_task(self) -> int:
        if self.fixed_task is not None:
            return self.fixed_task
        if self._crl:
            return self._schedule[self._block].task_id
        return int(self.np_random.choice(self.num_tasks, p=self.task_probs))

    def _observation(self, game_obs: np.ndarray) -> np.ndarray:
        obs = np.zeros(self.observation_space.shape, dtype=self.observation_space.dtype)
        self._write_game_obs(obs[: self.base_obs_dim], game_obs)
        if self.task_onehot:
            obs[self.base_obs_dim + self.current_task] = 1
        return obs

    def _info(self, invalid_action: bool) -> dict[str, Any]:
        info: dict[str, Any] = {
            "task_id": self.current_task,
            "task_name": self.task_names[self.current_task],
            "invalid_action": invalid_action,
        }
        if self._crl:
            block = self._schedule[self._block]
            info.update(
                block=block.block,
                cycle=block.cycle,
                block_step=self._total_steps - self._block_start,
                schedule_done=self._total_steps >= len(self._schedule) * self.block_steps,
            )
        return info

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r}, tasks={list(self.task_names)})"


class TaskSuiteEnv(SuiteEnv):
    """A suite of tasks served as one Gymnasium environment, in MTRL or CRL mode (see module docs).

    Contract attributes (read through wrappers with ``env.get_wrapper_attr(name)``):
    ``mode``, ``task_names``, ``num_tasks``, ``task_onehot``, ``current_task``, ``valid_actions``
    (bool, ``(num_tasks, n_actions)``), ``obs_bounds`` (finite low/high of the padded base observation,
    without one-hot, for rescaling inputs to [-1, 1]; per dimension the union over the tasks that fill
    it), ``task_obs_bounds`` (the same per task, ``(num_tasks, 2, base_dim)``, padding dimensions
    (-1, 1)), ``return_bounds``
    (``(num_tasks, 2)`` low/high episode returns for normalisation), ``base_obs_dim``, ``tasks``
    (the :class:`~moerl.rl.envs.tasks.Task` objects) and :meth:`schedule`.

    ``info`` always has ``task_id``, ``task_name`` and ``invalid_action``; CRL adds ``block``,
    ``cycle``, ``block_step`` (steps since this block started) and ``schedule_done``.
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 50}
    tasks: tuple[Task, ...]

    def __init__(
        self,
        tasks: str | Sequence[str | Task] = "cartpole",
        mode: str = "mtrl",
        *,
        task_probs: Sequence[float] | None = None,
        block_steps: int | None = None,
        cycles: int | None = None,
        order: str | Sequence[int | str] | None = None,
        task_onehot: bool = True,
        fixed_task: int | str | None = None,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.tasks = resolve_tasks(tasks)
        super().__init__(
            tuple(t.name for t in self.tasks),
            mode,
            task_probs=task_probs,
            block_steps=block_steps,
            cycles=cycles,
            order=order,
            task_onehot=task_onehot,
            fixed_task=fixed_task,
            render_mode=render_mode,
        )
        self._set_limits([t.base.max_episode_steps for t in self.tasks], max_episode_steps)
        self._envs = [build_game(t.base.name, t.physics_dict, render_mode) for t in self.tasks]
        self._set_actions([t.base.n_actions for t in self.tasks])
        self.base_obs_dim = max(t.base.obs_dim for t in self.tasks)
        self.observation_space = self._make_observation_space()
        self.task_obs_bounds = self._make_task_obs_bounds()
        self.obs_bounds = self._make_obs_bounds()
        self.return_bounds = np.array([self._return_bounds(i) for i in range(self.num_tasks)])

    # ------------------------------------------------------------------ construction helpers
    def _make_observation_space(self) -> spaces.Box:
        """Union of the base games' own observation boxes (padding exactly 0), then the one-hot in [0, 1].

        The stock CartPole box is unbounded in its velocities; those bounds become the largest float32
        so that the space is finite (the env checkers warn on infinite bounds) yet holds every real
        observation. Use ``obs_bounds``, not this box, to rescale network inputs.
        """
        low = np.zeros(self.base_obs_dim, dtype=np.float32)
        high = np.zeros(self.base_obs_dim, dtype=np.float32)
        for env in self._envs:
            box = env.observation_space
            assert isinstance(box, spaces.Box), box  # the classic-control games
            n = box.shape[0]
            low[:n] = np.minimum(low[:n], box.low)
            high[:n] = np.maximum(high[:n], box.high)
        big = np.finfo(np.float32).max
        low, high = np.clip(low, -big, big), np.clip(high, -big, big)
        if self.task_onehot:
            low = np.concatenate([low, np.zeros(self.num_tasks, dtype=np.float32)])
            high = np.concatenate([high, np.ones(self.num_tasks, dtype=np.float32)])
        return spaces.Box(low, high, dtype=np.float32)

    def _make_task_obs_bounds(self) -> np.ndarray:
        bounds = np.empty((self.num_tasks, 2, self.base_obs_dim), dtype=np.float32)
        bounds[:, 0], bounds[:, 1] = -1.0, 1.0
        for i, task in enumerate(self.tasks):
            low, high = task.base.obs_bounds
            bounds[i, 0, : len(low)] = low
            bounds[i, 1, : len(high)] = high
        return bounds

    def _make_obs_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per dimension, the union of the bounds of the tasks that fill it (padding never widens them)."""
        used = np.arange(self.base_obs_dim)[None, :] < np.array([t.base.obs_dim for t in self.tasks])[:, None]
        low = np.where(used, self.task_obs_bounds[:, 0], np.inf).min(axis=0)
        high = np.where(used, self.task_obs_bounds[:, 1], -np.inf).max(axis=0)
        return low.astype(np.float32), high.astype(np.float32)

    def _return_bounds(self, i: int) -> tuple[float, float]:
        """The task's bounds, moved to the episode limit when it differs from the game's usual one."""
        task, limit = self.tasks[i], int(self._limits[i])
        assert task.return_bounds is not None  # Task.__post_init__ fills in the game's default
        low, high = task.return_bounds
        if limit == task.base.max_episode_steps:
            return low, high
        if task.game == "cartpole":
            return 0.0, float(limit)
        return float(-limit), max(high, -limit + 1.0)

    # ------------------------------------------------------------------ the games
    def _reset_game(self, task: int, options: dict[str, Any] | None) -> np.ndarray:
        env = self._envs[task]
        env.np_random = self.np_random  # one generator for the whole suite: a seed fixes everything
        obs, _ = env.reset(options=options)
        return obs

    def _step_game(self, task: int, action: int) -> tuple[np.ndarray, float, bool]:
        obs, reward, terminated, _, _ = self._envs[task].step(self.tasks[task].action_map[action])
        return obs, float(reward), bool(terminated)

    def _write_game_obs(self, out: np.ndarray, game_obs: np.ndarray) -> None:
        out[: game_obs.shape[0]] = game_obs

    def render(self) -> Any:
        """Render the current task's stock environment."""
        return self._envs[self.current_task].render()

    def close(self) -> None:
        for env in self._envs:
            env.close()
        super().close()
