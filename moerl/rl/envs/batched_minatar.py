"""The MinAtar task suites in torch: N environments, possibly in different games, stepped at once.

Why: the batched engine (:class:`~moerl.rl.engine.batched_dqn.BatchedDQN`) trains many seeds in one process,
and a Gymnasium MinAtar suite per seed (the ``minatar`` package, pure Python) costs far more per step than
the networks. The five games exist as batched torch dynamics (:mod:`moerl.rl.envs.minatar`, checked exactly
against the package); this module makes them the tasks of a suite, with the same rules as the reference
suite :class:`~moerl.rl.envs.minatar_suite.MinAtarSuiteEnv`.

One source of truth: a :class:`BatchedMinAtarSuite` is built *from* ``MinAtarSuiteEnv`` objects (the validated
specs) and follows their rules:

* **observation**: one flat ``uint8`` vector of 0s and 1s, ``[grid | one-hot task id]``, the game's
  ``10 x 10 x c`` grid padded with zero channels to ``C`` (the most channels among the suite's games) and
  flattened in (row, column, channel) order, exactly the reference's bytes;
* **actions**: action ``i`` is the ``i``-th of the current game's set (minimal or full, ``action_set``); an
  action beyond the set is mapped ``action % len(set)`` and flagged ``invalid_action``;
  :attr:`valid_actions` is the reference's mask table;
* **sticky actions** (``sticky_action_prob``, per environment): with that probability the previous executed
  action (of the full set) is repeated instead, decided by one uniform per step whatever the probability (as
  the package draws one every step); the previous action is no-op at the start of every episode, as the
  reference suite sets it;
* **difficulty ramping** as the spec says (shared by a batch: it is a property of the game objects);
* **truncation** at each task's episode limit (1000 steps, Freeway 2500, or the spec's ``max_episode_steps``),
  reported as ``truncated``, never as a termination;
* **CRL**: blocks of ``block_steps`` env steps on the nominal grid, a switch only at the first reset after a
  block's nominal end, the last task kept after the schedule ends, ``order="random"`` drawn with
  ``np.random.default_rng(seed)`` as ``reset(seed=seed)`` draws it: the schedule table is the classic batched
  suite's (:func:`~moerl.rl.envs.batched.schedule_table`), so both switch at the same steps as the reference
  for the same seed; **MTRL**: a task drawn per episode from ``task_probs``; ``fixed_task`` / ``fixed_tasks``
  pin one task per environment.

**Tasks are games** (a MinAtar suite names each game once), so task ``t`` is game ``t``. The state of each
game is its own batch: the game's state dict holds exactly the environments currently in that game (sorted by
environment index), and a step steps only the games some environment is in, each on its own environments (a
loop over at most five games, never over environments). An environment moves from one game's batch to
another only when an episode ends with a switch of task (a CRL block boundary, an MTRL draw); a batch of one
game, such as a CRL suite between switches, steps with no gather or scatter at all. Moving rows keeps each
state tensor's memory layout (the games choose layouts for speed, e.g. slot-major).

**Randomness** comes only from :class:`~moerl.core.seed_streams.SeedStreams`, one stream per environment's
seed, so an environment's episodes depend on its seed (and the suite's settings) only, never on the other
environments of the batch. Every :meth:`reset` and :meth:`step` draws one row of :attr:`draws_per_call`
float64 uniforms per environment, used or not, slot by slot:

* slot :attr:`STICKY_SLOT` (0): the sticky-action decision (``u < sticky_action_prob``);
* slots ``step_slot ... step_slot + draws_per_step - 1`` (:attr:`step_slot` = 1): the game's step draws
  (see each game's docstring; the game of the environment's current task reads the first ``draws_per_step``);
* slot :attr:`task_slot`: the MTRL task draw of the episode starting after this step (if one does);
* slots ``reset_slot ...``: the reset draws of the game of that new episode.

:meth:`reset` uses only the last two parts. The numbers are not the ``minatar`` package's (it draws from its
own ``RandomState``); fed the same numbers, the reference suite plays the same episodes (tested through the
test oracles' stand-ins for its ``RandomState``), and with its own numbers the same statistics (tested).

Environments reset themselves when an episode ends (as :class:`~moerl.rl.envs.batched.BatchedTaskSuite`
does): :meth:`step` returns a :class:`~moerl.rl.envs.batched.BatchStep` with the first observation of the next
episode in ``obs`` and the last of the one that ended in ``final_obs``. ``task_id`` and ``invalid_action``
are the reference's ``info`` keys of the same names, :attr:`block` its ``info["block"]``.

Host reads: on a step where some episode ends, the suite reads which ones (and their next tasks) on the host
to move rows between the games' batches; the games themselves read small values on the CPU. So unlike the
classic suites, a chunk of MinAtar steps on a GPU waits for the device at episode ends (not a concern on the
CPU, where the engine runs these small networks fastest).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from moerl.core.seed_streams import SeedStreams
from moerl.rl.envs.batched import BatchStep, SpecBatch, schedule_table
from moerl.rl.envs.minatar.asterix import Asterix
from moerl.rl.envs.minatar.base import GRID, BatchedGame, State, put_rows_
from moerl.rl.envs.minatar.breakout import Breakout
from moerl.rl.envs.minatar.freeway import Freeway
from moerl.rl.envs.minatar.games import NUM_FULL_ACTIONS
from moerl.rl.envs.minatar.seaquest import Seaquest
from moerl.rl.envs.minatar.space_invaders import SpaceInvaders
from moerl.rl.spec import SuiteSpec

#: Stream purpose of the environments' draws (see :class:`SeedStreams`); the classic batched suite's too (a
#: suite is one or the other, so the two never share a stream).
ENV_STREAM = 1
#: The batched game of each MinAtar task name.
GAME_CLASSES: dict[str, type] = {"asterix": Asterix, "breakout": Breakout, "freeway": Freeway,
                                 "seaquest": Seaquest, "space_invaders": SpaceInvaders}
#: What every member of one batch must share: the network reads the same observation and action layout, and
#: the games are built once for the batch (difficulty ramping is a property of the game objects).
_SHARED = ("task_names", "task_onehot", "base_obs_dim", "action_set", "ramping")


def _physical_order(t: torch.Tensor) -> list[int]:
    """The order of ``t``'s dimensions in memory, outermost first (what ``torch.empty_permuted`` takes)."""
    strides = t.stride()
    return sorted(range(t.dim()), key=lambda d: (-strides[d], d))


def _like(value: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """``value`` copied into a tensor laid out in memory as ``template`` (a game's chosen layout)."""
    if value.dim() < 2:
        return value.contiguous()
    out = torch.empty_permuted(value.shape, _physical_order(template), dtype=value.dtype, device=value.device)
    return out.copy_(value)


class BatchedMinAtarSuite(SpecBatch):
    """N MinAtar task suites, one per seed, stepped together (see the module docstring).

    Args:
        suite: the spec, a ``MinAtarSuiteEnv`` (e.g. ``gym.make("moerl/MinAtar-CRL-v0").unwrapped``), or one spec
            per environment: members may differ in setting (MTRL or CRL, block length, cycles, order, task
            probabilities, fixed task, episode limits, sticky-action probability) as long as they share the
            games, the one-hot convention, the action set and difficulty ramping.
        seeds: one environment per seed.
        device: where every tensor lives.
        fixed_tasks: one task index per environment, each kept for every episode (per-task evaluation in one
            batch); overrides the specs' ``fixed_task``.

    The interface is :class:`~moerl.rl.envs.batched.BatchedTaskSuite`'s (what the batched engine uses), plus
    :attr:`obs_dtype` (``torch.uint8``) and :meth:`game_state`.
    """

    #: The slot of the sticky-action uniform in a row of draws (see the module docstring).
    STICKY_SLOT = 0

    def __init__(self, suite: SuiteSpec | Sequence[SuiteSpec], seeds: Sequence[int],
                 device: str | torch.device = "cpu", fixed_tasks: Sequence[int] | None = None) -> None:
        specs = self._read_specs(suite, seeds, device, fixed_tasks, _SHARED)
        if any(getattr(spec, "grid_shape", None) is None for spec in specs):
            raise ValueError("BatchedMinAtarSuite runs the MinAtar suites (MinAtarSuiteEnv); for the classic "
                             "suites use BatchedTaskSuite")
        dev, n, first = self.device, self.num_envs, specs[0]
        self.grid_shape: tuple[int, ...] = tuple(first.grid_shape)
        self.num_channels = self.grid_shape[2]
        #: The observations' dtype: bytes, as the reference suite's (a replay buffer stores them so).
        self.obs_dtype = torch.uint8
        self.action_set = first.action_set
        self.ramping = bool(first.ramping)

        # The games (task t is game t) and how an agent's action becomes a game's (full-set) action.
        self.games: list[BatchedGame] = [GAME_CLASSES[name](self.ramping) for name in self.task_names]
        self._n_valid = self.valid_actions.sum(1)
        for game, declared in zip(self.games, first.tasks, strict=True):  # the plain data and the games agree
            assert game.spec.minimal_actions == declared.minimal_actions, (game.spec.name, declared)
        sets = [game.spec.minimal_actions if self.action_set == "minimal" else tuple(range(NUM_FULL_ACTIONS))
                for game in self.games]
        self._action_table = torch.tensor([list(s) + [0] * (self.n_actions - len(s)) for s in sets], device=dev)
        #: (N,) each environment's sticky-action probability (None: no environment has sticky actions).
        probs = [float(spec.sticky_action_prob) for spec in specs]
        self._sticky = (None if not any(probs) else torch.tensor(probs, dtype=torch.float64, device=dev))

        # The row of draws (see the module docstring).
        self.step_slot = 1
        self.task_slot = self.step_slot + max(game.draws_per_step for game in self.games)
        self.reset_slot = self.task_slot + 1
        self.draws_per_call = self.reset_slot + max(game.draws_per_reset for game in self.games)
        self._streams = SeedStreams(self.seeds, ENV_STREAM, dev)

        self._limit = torch.as_tensor(np.stack([spec.episode_limits for spec in specs]), dtype=torch.int64, device=dev)
        self._probs_cdf = torch.as_tensor(np.stack([np.cumsum(spec.task_probs) for spec in specs]),
                                          dtype=torch.float64, device=dev)
        schedules, blocks = schedule_table(specs, self.seeds, fixed_tasks)
        self.num_blocks = schedules.shape[1]
        self.schedule_tasks = torch.as_tensor(schedules, device=dev)
        self._env_blocks = torch.as_tensor(blocks, dtype=torch.int64, device=dev)
        self._block_steps = torch.as_tensor([spec.block_steps for spec in specs], dtype=torch.int64, device=dev)

        self.task = torch.zeros(n, dtype=torch.int64, device=dev)
        self.last_action = torch.zeros(n, dtype=torch.int64, device=dev)
        self.block = torch.zeros(n, dtype=torch.int64, device=dev)
        self.total_steps = torch.zeros(n, dtype=torch.int64, device=dev)
        self.episode_steps = torch.zeros(n, dtype=torch.int64, device=dev)
        self.episode_return = torch.zeros(n, dtype=torch.float64, device=dev)
        self._arange = torch.arange(n, device=dev)
        self._task_ids = torch.arange(self.num_tasks, device=dev)
        #: Per game: one fresh state of one environment, whose tensors' memory layouts moved rows keep.
        self._templates = [game.reset(torch.zeros(1, game.draws_per_reset, dtype=torch.float64, device=dev))
                           for game in self.games]
        #: Per game: the environments in it (sorted; host and device copies) and their state (None if none).
        self._members: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in self.games]
        self._rows: list[torch.Tensor] = [torch.zeros(0, dtype=torch.int64, device=dev) for _ in self.games]
        self._states: list[State | None] = [None for _ in self.games]

    @property
    def crl(self) -> bool:
        """Whether some environment follows a CRL schedule."""
        return self.num_blocks > 0

    def game_state(self, task: int) -> tuple[torch.Tensor, State | None]:
        """The environments in ``task``'s game (sorted indices) and their game state (rows in that order)."""
        return self._rows[task], self._states[task]

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

    def _reset_where(self, mask: torch.Tensor, u: torch.Tensor, first: bool = False) -> None:
        """Start a new episode in the environments of ``mask`` (next CRL block if due, task, fresh game state,
        no-op as the previous action), with the task and reset slots of ``u``; moves the environments whose
        game changes from one game's batch to the other's."""
        if self.crl and not first:
            due = (self.total_steps >= (self.block + 1) * self._block_steps) & (self.block < self._env_blocks - 1)
            self.block = torch.where(mask & due, self.block + 1, self.block)
        self.task = torch.where(mask, self._pick_tasks(u[:, self.task_slot]), self.task)
        self.last_action = torch.where(mask, 0, self.last_action)
        self.episode_steps = torch.where(mask, 0, self.episode_steps)
        self.episode_return = torch.where(mask, 0.0, self.episode_return)
        # One host read for all games: which environments restart, and in which game.
        restart, task = mask.cpu().numpy(), self.task.cpu().numpy()
        for t, game in enumerate(self.games):
            old = self._members[t]
            new = np.flatnonzero(task == t)
            if not restart[new].any() and len(new) == len(old):
                continue  # nobody restarts in this game and nobody left it
            u_reset = u[:, self.reset_slot:self.reset_slot + game.draws_per_reset]
            state = self._states[t]
            if state is not None and np.array_equal(old, new):  # the same members, some restarting: in place
                local = torch.as_tensor(np.flatnonzero(restart[new]), device=self.device)  # rows in the game
                fresh = game.reset(u_reset.index_select(0, self._rows[t].index_select(0, local)))
                self._states[t] = put_rows_(state, local, fresh)  # the state is the last step's output: ours
                continue
            self._members[t] = new
            self._rows[t] = torch.as_tensor(new, device=self.device)
            if not len(new):
                self._states[t] = None
                continue
            # The new members: those that go on keep their rows, the others start fresh; sorted again.
            kept = new[~restart[new]]
            started = new[restart[new]]
            parts: list[State] = []
            if len(kept):
                assert state is not None  # an environment that goes on was in this game
                where = torch.as_tensor(np.searchsorted(old, kept), device=self.device)
                parts.append({k: v.index_select(0, where) for k, v in state.items()})
            if len(started):
                parts.append(game.reset(u_reset.index_select(0, torch.as_tensor(started, device=self.device))))
            order = np.argsort(np.concatenate([kept, started]), kind="stable")
            if len(parts) == 1:
                joined = parts[0]
            else:
                joined = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
            if not np.array_equal(order, np.arange(len(order))):
                perm = torch.as_tensor(order, device=self.device)
                joined = {k: v.index_select(0, perm) for k, v in joined.items()}
            template = self._templates[t]
            self._states[t] = {k: _like(v, template[k]) for k, v in joined.items()}

    def reset(self) -> torch.Tensor:
        """Start every environment from step 0 (the first CRL block); returns the observations ``(N, obs_dim)``."""
        self.block.zero_()
        self.total_steps.zero_()
        self._members = [np.zeros(0, dtype=np.int64) for _ in self.games]
        self._rows = [torch.zeros(0, dtype=torch.int64, device=self.device) for _ in self.games]
        self._states = [None for _ in self.games]
        u = self._streams.uniform(self.draws_per_call, dtype=torch.float64)
        self._reset_where(torch.ones(self.num_envs, dtype=torch.bool, device=self.device), u, first=True)
        return self.observation()

    def observation(self) -> torch.Tensor:
        """``(N, obs_dim)`` uint8: each env's game grid padded to ``C`` channels, flattened (row, column,
        channel), then the one-hot task id."""
        n, c_max = self.num_envs, self.num_channels
        out = torch.zeros(n, self.obs_dim, dtype=torch.uint8, device=self.device)
        grid = out[:, : self.base_obs_dim].unflatten(1, (GRID, GRID, c_max))
        for t, game in enumerate(self.games):
            state = self._states[t]
            if state is None:
                continue
            obs = game.observe(state).view(torch.uint8)  # (n_t, 10, 10, c) bytes, any layout
            c = obs.shape[-1]
            if len(self._members[t]) == n:  # every env in this game: rows 0..n-1 in order
                grid[..., :c] = obs
            else:
                grid[self._rows[t], :, :, :c] = obs
        if self.task_onehot:
            out[:, self.base_obs_dim:] = self.task[:, None] == self._task_ids
        return out

    # ------------------------------------------------------------------ dynamics
    def step(self, actions: torch.Tensor, validate: bool = True) -> BatchStep:
        """Take one action per environment ``(N,)``; ended episodes restart at once (see :class:`BatchStep`).

        ``validate=False`` skips the range check of ``actions`` (the engines' actions are valid by construction).
        Where no episode ended, ``obs`` and ``final_obs`` are one tensor (one observation pass instead of two):
        change neither in place.
        """
        actions = torch.as_tensor(actions, device=self.device).long()
        if validate and bool(((actions < 0) | (actions >= self.n_actions)).any()):
            bad = actions[(actions < 0) | (actions >= self.n_actions)][0].item()
            raise ValueError(f"action {bad} is not in Discrete({self.n_actions})")
        n = self.num_envs
        u = self._streams.uniform(self.draws_per_call, dtype=torch.float64)
        task = self.task
        n_valid = self._n_valid[task]
        invalid = actions >= n_valid
        full = self._action_table[task, actions % n_valid]
        if self._sticky is not None:
            full = torch.where(u[:, self.STICKY_SLOT] < self._sticky, self.last_action, full)
        self.last_action = full

        reward = terminated = None
        for t, game in enumerate(self.games):
            state = self._states[t]
            if state is None:
                continue
            u_step = u[:, self.step_slot:self.step_slot + game.draws_per_step]
            if len(self._members[t]) == n:  # every env in this game: no gather, no scatter
                self._states[t], reward, terminated = game.step(state, full, u_step)
                # a game may return its state's own terminal flags, which the restart below overwrites in place
                terminated = terminated.clone()
                break
            rows = self._rows[t]
            self._states[t], r, term = game.step(state, full.index_select(0, rows), u_step.index_select(0, rows))
            if reward is None or terminated is None:
                reward = torch.zeros(n, dtype=torch.float32, device=self.device)
                terminated = torch.zeros(n, dtype=torch.bool, device=self.device)
            reward[rows] = r
            terminated[rows] = term
        assert reward is not None and terminated is not None  # every env is in some game after reset()

        self.episode_steps += 1
        self.total_steps += 1
        self.episode_return += reward
        truncated = ~terminated & (self.episode_steps >= self._limit[self._arange, task])
        done = terminated | truncated
        final_obs = self.observation()
        episode_return = torch.where(done, self.episode_return, 0.0)
        episode_length = torch.where(done, self.episode_steps, 0)
        obs = final_obs
        if bool(done.any()):  # the host read of a step (see the module docstring)
            self._reset_where(done, u)
            obs = self.observation()
        return BatchStep(obs, reward, terminated, truncated, final_obs, task, invalid, episode_return,
                         episode_length)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything the next steps depend on, every tensor with the environments as its leading dimension
        (so that a subset of environments is ``index_select`` of each, as the engine's ``select`` does): the
        counters, and each game's state spread over all N rows (rows of environments in other games zero)."""
        keys = ("task", "last_action", "block", "total_steps", "episode_steps", "episode_return")
        out: dict[str, Any] = {k: getattr(self, k).clone() for k in keys}
        n = self.num_envs
        for t, name in enumerate(self.task_names):
            state = self._states[t]
            for key, template in self._templates[t].items():
                full = torch.zeros((n, *template.shape[1:]), dtype=template.dtype, device=self.device)
                if state is not None:
                    full[self._rows[t]] = state[key]
                out[f"game.{name}.{key}"] = full
        out["streams"] = self._streams.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (of this suite, or ``index_select`` of it for a subset)."""
        for key in ("task", "last_action", "block", "total_steps", "episode_steps", "episode_return"):
            setattr(self, key, state[key].to(self.device).clone())
        self._streams.load_state_dict(state["streams"])
        task = self.task.cpu().numpy()
        for t, name in enumerate(self.task_names):
            members = np.flatnonzero(task == t)
            self._members[t] = members
            self._rows[t] = rows = torch.as_tensor(members, device=self.device)
            template = self._templates[t]
            self._states[t] = None if not len(members) else {
                key: _like(state[f"game.{name}.{key}"].to(self.device).index_select(0, rows), template[key])
                for key in template}
