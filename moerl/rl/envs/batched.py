"""moerl's task suites in torch: N environments stepped at once, on any device, with no Python loop.

Why a second implementation beside :class:`~moerl.rl.envs.suite.TaskSuiteEnv`: a study trains hundreds of
seeds, and stepping a Gymnasium env per seed in Python costs more than the networks themselves. Here the
CartPole and MountainCar physics of every task variant are a few tensor expressions over ``(N, 4)`` states,
with per-environment task parameters, so N environments (one per seed) cost about what one does.

One source of truth: a :class:`BatchedTaskSuite` is built *from* a ``TaskSuiteEnv`` (the validated spec:
tasks, mode, CRL blocks and order, MTRL probabilities, one-hot, truncation limits, action maps) and
reproduces its rules:

* dynamics, rewards and termination of Gymnasium's ``CartPoleEnv`` / ``MountainCarEnv`` (explicit Euler,
  float64 state as Gymnasium keeps it, float32 observations), with each task's physics and action map;
  an action the task lacks is mapped to ``action % n_valid`` as the suite does (agents mask instead);
* truncation at the task's limit, the observation padded to the largest game plus the one-hot task id;
* CRL: blocks of ``block_steps`` env steps on the nominal grid, a switch only at the first reset after a
  block's nominal end, the last task kept after the schedule ends; ``order="random"`` draws each seed's
  permutation with ``np.random.default_rng(seed)``, as ``TaskSuiteEnv.reset(seed=seed)`` does, so the
  schedules switch at the same steps for the same seed;
* MTRL: a task drawn per episode from ``task_probs``.

Environments reset themselves when an episode ends (as SB3's vector envs do): :meth:`step` returns the
first observation of the next episode and, separately, the last observation of the one that ended (what
a replay buffer stores as the next observation). Random numbers (initial states, MTRL draws) come from
:class:`~moerl.core.seed_streams.SeedStreams`, one stream per seed, so an environment's episodes depend on its
seed only, never on the other seeds in the batch; they are not Gymnasium's numbers (statistically, not
bitwise, the same as the Gymnasium suite: tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from moerl.core.seed_streams import SeedStreams
from moerl.rl.envs.schedule import build_schedule
from moerl.rl.spec import SuiteSpec

#: Stream purposes (see :class:`SeedStreams`): environment resets and MTRL task draws.
_RESET_STREAM = 1
#: Gymnasium's constants of the two games (not physics a task may change).
_CARTPOLE_TAU = 0.02
_CARTPOLE_X_LIMIT = 2.4
_CARTPOLE_THETA_LIMIT = 12 * 2 * math.pi / 360
_MC_MIN_POSITION, _MC_MAX_POSITION, _MC_MAX_SPEED, _MC_GOAL = -1.2, 0.6, 0.07, 0.5
_GAME_IDS = {"cartpole": 0, "mountaincar": 1}


@dataclass
class BatchStep:
    """What :meth:`BatchedTaskSuite.step` returns; every field has a leading dimension N.

    ``obs``: the next observation (the reset one where an episode ended). ``final_obs``: the observation the
    action led to (equal to ``obs`` where the episode goes on). ``task_id``: the task the action was taken
    in. ``episode_return`` / ``episode_length``: of the episodes that ended here (``done``), else 0.
    """

    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_obs: torch.Tensor
    task_id: torch.Tensor
    invalid_action: torch.Tensor
    episode_return: torch.Tensor
    episode_length: torch.Tensor

    @property
    def done(self) -> torch.Tensor:
        return self.terminated | self.truncated


def schedule_table(specs: Sequence[SuiteSpec], seeds: Sequence[int],
                   fixed_tasks: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each env's CRL task per block, ``(N, blocks)`` (shorter schedules repeat their last task, which the
    env keeps after its schedule ends), and each env's number of blocks ``(N,)`` (0 outside CRL or with a
    fixed task). ``order="random"`` draws seed ``s``'s permutations with ``np.random.default_rng(s)``, as
    ``SuiteEnv.reset(seed=s)`` does. Shared by the classic and the MinAtar batched suites, so that both
    follow the reference's schedules by construction."""
    rows: list[list[int]] = []
    for i, (spec, seed) in enumerate(zip(specs, seeds, strict=True)):
        fixed = fixed_tasks is not None and fixed_tasks[i] >= 0
        if spec.mode != "crl" or fixed:
            rows.append([])
            continue
        rng = np.random.default_rng(seed) if spec.order == "random" else None
        blocks = build_schedule(spec.order, spec.task_names, spec.block_steps, spec.cycles, rng)
        rows.append([b.task_id for b in blocks])
    width = max(len(row) for row in rows)
    table = np.asarray([row + [row[-1] if row else 0] * (width - len(row)) for row in rows], dtype=np.int64)
    return table.reshape(len(rows), width), np.asarray([len(row) for row in rows], dtype=np.int64)


#: What every member of one batch must share: the network reads the same observation and action layout.
_SHARED = ("task_names", "task_onehot", "base_obs_dim")


class SpecBatch:
    """What every batched suite reads from its specs, once: one spec per environment, the keys the members
    must share, and the suite-level facts (tasks, setting, sizes, bounds, fixed tasks) taken from the first.

    Why a base class: the classic and the MinAtar batched suites read their specs the same way; only their
    games differ.
    """

    def _read_specs(self, suite: SuiteSpec | Sequence[SuiteSpec], seeds: Sequence[int],
                    device: str | torch.device, fixed_tasks: Sequence[int] | None,
                    shared: Sequence[str]) -> list[Any]:
        """Set the suite-level attributes from ``suite`` (one spec, or one per seed) and return the specs;
        ``ValueError`` when their number or a ``shared`` key disagrees, or a fixed task is out of range."""
        self.device = torch.device(device)
        self.seeds = [int(s) for s in seeds]
        n = self.num_envs = len(self.seeds)
        specs: list[Any] = list(suite) if isinstance(suite, Sequence) else [suite] * n
        if len(specs) != n:
            raise ValueError(f"one suite spec per environment: {len(specs)} specs for {n} seeds")
        first = specs[0]
        for key in shared:
            if any(getattr(spec, key) != getattr(first, key) for spec in specs):
                raise ValueError(f"the suites of one batch must share their {key}; got "
                                 f"{sorted({str(getattr(spec, key)) for spec in specs})}")
        self.specs = specs
        self.task_names: tuple[str, ...] = first.task_names
        self.num_tasks = first.num_tasks
        #: The setting of the first spec (all of them when the batch is uniform); per env: :attr:`modes`.
        self.mode = first.mode
        self.modes = [spec.mode for spec in specs]
        self.base_obs_dim = first.base_obs_dim
        self.task_onehot = first.task_onehot
        self.obs_dim = int(first.observation_space.shape[0])
        self.n_actions = int(first.valid_actions.shape[1])
        self.block_steps = first.block_steps
        self.return_bounds = first.return_bounds
        self.obs_bounds = first.obs_bounds
        self.fixed_task = first.fixed_task
        if fixed_tasks is None and any(spec.fixed_task is not None for spec in specs):
            fixed_tasks = [-1 if spec.fixed_task is None else spec.fixed_task for spec in specs]
        if fixed_tasks is not None and (len(fixed_tasks) != n or not all(-1 <= k < self.num_tasks for k in fixed_tasks)):
            raise ValueError(f"fixed_tasks: one task index in [0, {self.num_tasks}) per environment ({n}), "
                             f"got {list(fixed_tasks)}")
        #: (N,) the task each environment keeps (-1: none, it follows its CRL schedule or MTRL draws), or None.
        self._fixed = None if fixed_tasks is None else torch.as_tensor(list(fixed_tasks), dtype=torch.int64,
                                                                      device=self.device)
        self.valid_actions = torch.as_tensor(first.valid_actions, device=self.device)
        return specs


class BatchedTaskSuite(SpecBatch):
    """N task suites, one per seed, stepped together (see the module docstring).

    Args:
        suite: the spec; any ``TaskSuiteEnv`` (e.g. ``gym.make("moerl/CartPole-CRL-v0").unwrapped``), or one
            spec per environment: members of a batch may differ in setting (MTRL or CRL, block length, cycles,
            order, task probabilities, fixed task, episode limits) as long as they share the tasks, the one-hot
            convention and the observation size (what the network reads). Each spec's ``fixed_task`` is honoured.
        seeds: one environment per seed.
        device: where every tensor lives.
        fixed_tasks: one task index per environment, each kept for every episode (no CRL schedule, no MTRL
            draw): every task of a suite evaluated in one batch. Overrides the specs' ``fixed_task``.
    """

    def __init__(self, suite: SuiteSpec | Sequence[SuiteSpec], seeds: Sequence[int],
                 device: str | torch.device = "cpu", fixed_tasks: Sequence[int] | None = None) -> None:
        specs = self._read_specs(suite, seeds, device, fixed_tasks, _SHARED)
        dev, f64, n = self.device, torch.float64, self.num_envs
        #: The observations' dtype (a replay buffer stores them so).
        self.obs_dtype = torch.float32
        tasks = specs[0].tasks
        self._n_valid = self.valid_actions.sum(1)
        self._game = torch.tensor([_GAME_IDS[t.game] for t in tasks], device=dev)
        #: The games the suite has: a suite of one game steps only that game's physics (static, no branch on data).
        self._games = {t.game for t in tasks}
        #: (N, tasks) each environment's episode limit per task.
        self._limit = torch.as_tensor(np.stack([spec.episode_limits for spec in specs]), dtype=torch.int64, device=dev)
        self._action_map = torch.tensor(
            [list(t.action_map) + [0] * (self.n_actions - len(t.action_map)) for t in tasks], device=dev)
        phys = [t.physics_dict for t in tasks]

        def column(key: str, default: float) -> torch.Tensor:
            return torch.tensor([p.get(key, default) for p in phys], dtype=f64, device=dev)

        self._gravity = column("gravity", 0.0)
        self._masscart, self._masspole = column("masscart", 1.0), column("masspole", 0.1)
        self._length, self._force_mag, self._force = column("length", 0.5), column("force_mag", 10.0), column(
            "force", 0.001)
        #: (N, tasks) each environment's cumulative MTRL task probabilities.
        self._probs_cdf = torch.as_tensor(np.stack([np.cumsum(spec.task_probs) for spec in specs]), dtype=f64,
                                          device=dev)
        schedules, blocks = schedule_table(specs, self.seeds, fixed_tasks)
        self.num_blocks = schedules.shape[1]
        self.schedule_tasks = torch.as_tensor(schedules, device=dev)  # (N, blocks); 0 blocks: no env in CRL
        #: (N,) each environment's number of CRL blocks (0: not CRL) and block length.
        self._env_blocks = torch.as_tensor(blocks, dtype=torch.int64, device=dev)
        self._block_steps = torch.as_tensor([spec.block_steps for spec in specs], dtype=torch.int64, device=dev)
        self._streams = SeedStreams(self.seeds, _RESET_STREAM, dev)
        self.state = torch.zeros(n, 4, dtype=f64, device=dev)
        self.task = torch.zeros(n, dtype=torch.int64, device=dev)
        self._task_ids = torch.arange(self.num_tasks, device=dev)
        self.block = torch.zeros(n, dtype=torch.int64, device=dev)
        self.total_steps = torch.zeros(n, dtype=torch.int64, device=dev)
        self.episode_steps = torch.zeros(n, dtype=torch.int64, device=dev)
        self.episode_return = torch.zeros(n, dtype=f64, device=dev)
        self._arange = torch.arange(n, device=dev)

    # ------------------------------------------------------------------ construction
    @property
    def crl(self) -> bool:
        """Whether some environment follows a CRL schedule."""
        return self.num_blocks > 0

    # ------------------------------------------------------------------ episodes
    def _pick_tasks(self, u: torch.Tensor) -> torch.Tensor:
        """Each env's task for its next episode: its fixed task, else its CRL block's, else an MTRL draw."""
        drawn = torch.searchsorted(self._probs_cdf, u.contiguous()[:, None], right=True)[:, 0]
        task = drawn.clamp_(max=self.num_tasks - 1)
        if self.crl:
            task = torch.where(self._env_blocks > 0, self.schedule_tasks[self._arange, self.block], task)
        if self._fixed is not None:
            task = torch.where(self._fixed >= 0, self._fixed, task)
        return task

    def _reset_where(self, mask: torch.Tensor, first: bool = False) -> None:
        """Start a new episode in the environments of ``mask``: next CRL block if due, task, initial state."""
        u = self._streams.uniform(5, dtype=torch.float64)  # every env draws: a stream never depends on others
        if self.crl and not first:
            due = (self.total_steps >= (self.block + 1) * self._block_steps) & (self.block < self._env_blocks - 1)
            self.block = torch.where(mask & due, self.block + 1, self.block)
        task = self._pick_tasks(u[:, 4])
        self.task = torch.where(mask, task, self.task)
        cartpole = (self._game[self.task] == 0)[:, None]
        cp_state = u[:, :4] * 0.1 - 0.05  # CartPole: uniform(-0.05, 0.05) x 4
        mc_state = torch.zeros_like(cp_state)
        mc_state[:, 0] = u[:, 0] * 0.2 - 0.6  # MountainCar: position uniform(-0.6, -0.4), velocity 0
        new = torch.where(cartpole, cp_state, mc_state)
        self.state = torch.where(mask[:, None], new, self.state)
        self.episode_steps = torch.where(mask, 0, self.episode_steps)
        self.episode_return = torch.where(mask, 0.0, self.episode_return)

    def reset(self) -> torch.Tensor:
        """Start every environment from step 0 (the first CRL block); returns the observations ``(N, obs_dim)``."""
        self.block.zero_()
        self.total_steps.zero_()
        self._reset_where(torch.ones(self.num_envs, dtype=torch.bool, device=self.device), first=True)
        return self.observation()

    def observation(self) -> torch.Tensor:
        """``(N, obs_dim)`` float32: the base state padded to the largest game, then the one-hot task id."""
        if self._games == {"cartpole"}:
            base = self.state
        elif self._games == {"mountaincar"}:
            base = torch.nn.functional.pad(self.state[:, :2], (0, 2))
        else:
            cartpole = (self._game[self.task] == 0)[:, None]
            base = torch.where(cartpole, self.state, torch.nn.functional.pad(self.state[:, :2], (0, 2)))
        base = base[:, : self.base_obs_dim].float()
        if not self.task_onehot:
            return base
        # a comparison, not F.one_hot, which checks the ids' range on the host at every call
        onehot = (self.task[:, None] == self._task_ids).float()
        return torch.cat([base, onehot], dim=1)

    # ------------------------------------------------------------------ dynamics
    def _physics(self, base_action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Next states and termination of every env under its task's game (a mixed suite computes both games
        for every env and keeps its own; a suite of one game computes only that one)."""
        if self._games == {"cartpole"}:
            return self._cartpole(base_action)
        if self._games == {"mountaincar"}:
            return self._mountaincar(base_action)
        cp, cp_done = self._cartpole(base_action)
        mc, mc_done = self._mountaincar(base_action)
        cartpole = self._game[self.task] == 0
        return torch.where(cartpole[:, None], cp, mc), torch.where(cartpole, cp_done, mc_done)

    def _cartpole(self, base_action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gymnasium's ``CartPoleEnv.step`` (Euler integrator) with each env's task physics."""
        t = self.task
        x, x_dot, theta, theta_dot = self.state.unbind(1)
        masspole, length = self._masspole[t], self._length[t]
        total_mass = masspole + self._masscart[t]
        polemass_length = masspole * length
        force = torch.where(base_action == 1, self._force_mag[t], -self._force_mag[t])
        costheta, sintheta = torch.cos(theta), torch.sin(theta)
        temp = (force + polemass_length * theta_dot.square() * sintheta) / total_mass
        thetaacc = (self._gravity[t] * sintheta - costheta * temp) / (
            length * (4.0 / 3.0 - masspole * costheta.square() / total_mass))
        xacc = temp - polemass_length * thetaacc * costheta / total_mass
        cp = torch.stack([x + _CARTPOLE_TAU * x_dot, x_dot + _CARTPOLE_TAU * xacc,
                          theta + _CARTPOLE_TAU * theta_dot, theta_dot + _CARTPOLE_TAU * thetaacc], 1)
        return cp, (cp[:, 0].abs() > _CARTPOLE_X_LIMIT) | (cp[:, 2].abs() > _CARTPOLE_THETA_LIMIT)

    def _mountaincar(self, base_action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gymnasium's ``MountainCarEnv.step``; the state is (position, velocity) = (x, x_dot), zero-padded."""
        t = self.task
        x, x_dot = self.state[:, 0], self.state[:, 1]
        a = base_action.to(torch.float64)
        velocity = x_dot + (a - 1) * self._force[t] + torch.cos(3 * x) * (-self._gravity[t])
        velocity = velocity.clamp(-_MC_MAX_SPEED, _MC_MAX_SPEED)
        position = (x + velocity).clamp(_MC_MIN_POSITION, _MC_MAX_POSITION)
        velocity = torch.where((position == _MC_MIN_POSITION) & (velocity < 0), 0.0, velocity)
        mc = torch.stack([position, velocity, torch.zeros_like(x), torch.zeros_like(x)], 1)
        return mc, (position >= _MC_GOAL) & (velocity >= 0)

    def step(self, actions: torch.Tensor, validate: bool = True) -> BatchStep:
        """Take one action per environment ``(N,)``; ended episodes restart at once (see :class:`BatchStep`).

        ``validate=False`` skips the range check of ``actions``, the one place a step reads a device value on
        the host: for callers whose actions are valid by construction (the engines' argmax and draws).
        """
        actions = torch.as_tensor(actions, device=self.device).long()
        if validate and bool(((actions < 0) | (actions >= self.n_actions)).any()):
            bad = actions[(actions < 0) | (actions >= self.n_actions)][0].item()
            raise ValueError(f"action {bad} is not in Discrete({self.n_actions})")
        task = self.task
        n_valid = self._n_valid[task]
        invalid = actions >= n_valid
        base_action = self._action_map[task, actions % n_valid]
        self.state, terminated = self._physics(base_action)
        reward = torch.where(self._game[task] == 0, 1.0, -1.0).to(torch.float64)
        self.episode_steps += 1
        self.total_steps += 1
        self.episode_return += reward
        truncated = ~terminated & (self.episode_steps >= self._limit[self._arange, task])
        done = terminated | truncated
        final_obs = self.observation()
        episode_return = torch.where(done, self.episode_return, 0.0)
        episode_length = torch.where(done, self.episode_steps, 0)
        self._reset_where(done)
        return BatchStep(self.observation(), reward.float(), terminated, truncated, final_obs, task, invalid,
                         episode_return, episode_length)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything the next steps depend on (checkpoints of a batched run)."""
        keys = ("state", "task", "block", "total_steps", "episode_steps", "episode_return")
        out: dict[str, Any] = {k: getattr(self, k).clone() for k in keys}
        out["streams"] = self._streams.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if key == "streams":
                self._streams.load_state_dict(value)
            else:
                setattr(self, key, value.to(self.device).clone())
