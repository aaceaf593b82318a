"""MinAtar task suites: MinAtar games as the tasks of one MTRL or CRL environment, on the reference path.

:class:`MinAtarSuiteEnv` is a :class:`~moerl.rl.envs.suite.SuiteEnv`, the same object as the classic suites
with other games: the MTRL draws, the CRL block schedules, ``fixed_task``, the one-hot task id, the action
masks (``valid_actions``), truncation and the ``info`` keys are the shared code's, seeded by ``reset(seed)``
alike. The games are the ``minatar`` package's own (``minatar.Environment``; GPL-3.0, an optional extra:
``pip install "moerl[minatar]"``), used as a library and never copied; without it, making a suite raises
one :class:`~moerl.core.errors.ConfigError` line that names the extra.

**Games.** ``games``: any of ``asterix``, ``breakout``, ``freeway``, ``seaquest``, ``space_invaders`` (also
the task names); default the paper's three, SpaceInvaders, Breakout, Asterix, in the order arXiv 2406.18420
lists them (so a sequential CRL run goes SpaceInvaders -> Breakout -> Asterix).

**Semantics.** The default is the paper's code base (PureJaxRL on gymnax): each game's *minimal* action set,
no sticky actions, difficulty ramping on (gymnax ramps Asterix, Seaquest and SpaceInvaders by default, as the
``minatar`` package does; Breakout and Freeway never ramp). The package's own semantics, those of its
published DQN curves, are three keywords away: ``action_set="full"`` (all six actions in every game),
``sticky_action_prob=0.1`` (the previous action is repeated with this probability, drawn every step) and
``ramping`` (already on; ``False`` switches it off). Returns differ a lot between the two: compare only with
an anchor that has the same semantics.

**Observations** are one flat ``uint8`` vector of 0s and 1s: ``[grid | one-hot task id]``. The grid is the
game's boolean ``10 x 10 x c`` state padded with zero channels to ``C``, the most channels among the chosen
games (Breakout 4, SpaceInvaders 6, Asterix 4, Freeway 7, Seaquest 10), flattened in C order (row, column,
channel): ``obs[:100 * C].reshape(10, 10, C)`` (:meth:`MinAtarSuiteEnv.grid_of`, ``grid_shape``) gives it
back exactly, with channels ``c..C-1`` zero. Why flat, not a ``(10, 10, C)`` Box with the task id as
constant extra channels or in a Dict: it is the layout every moerl suite has (game part, then the one-hot:
``base_obs_dim`` and ``num_tasks`` say where), so moerl's ``ObsLayout`` / ``ObservationEncoder`` (which read
a flat Box) and SB3's ``MlpPolicy`` read it as they are, and SB3's replay buffer stores it as bytes; a
``(10, 10, C)`` uint8 Box bounded by 1 makes SB3's checker warn about images (bounds not 0-255, smaller than
36x36), a Dict needs SB3's ``MultiInputPolicy`` and a dict replay buffer, and constant channels would store
the task id a hundred times per observation. gymnax's PPO (the paper's) also feeds the flattened grid to an
MLP. A convolutional trunk reshapes the first ``100 * C`` entries. ``obs_bounds`` are 0 and 1 everywhere, for
every task (a padded channel reads as an always-empty one).

**Actions** are ``Discrete`` of the largest action count among the chosen games' sets (5 for the default
three: Asterix's minimal set); action ``i`` is the ``i``-th action of the current game's set (MinAtar's
order: no-op, left, up, right, down, fire, minus what the set lacks). ``valid_actions[t]`` allows the first
``len(set)`` actions; an action beyond them is mapped ``action % len(set)`` and flagged
``info["invalid_action"]``, as in the mixed classic suite.

**Episode limits.** The package never truncates (only Freeway ends on its own clock). Defaults are gymnax's
(the paper's episode length): 1,000 steps per game, 2,500 for Freeway, where gymnax also uses 2,500; here a
limit *truncates* (``truncated=True``: the time left is not in the observation, so an agent bootstraps there),
where gymnax reports it as an ordinary end. Freeway is thus truncated at step 2,500, one step before the
package would end it. ``max_episode_steps`` sets one limit for every game.

**Return bounds** (normalised returns): ``(0, PPO's score after 1e7 steps)`` per game, an assumption documented
in :mod:`moerl.rl.envs.minatar.games` (SpaceInvaders 131, Breakout 28, Asterix 15, Freeway 58, Seaquest 20);
they are meant for the default semantics and limits: ``return_bounds={"breakout": (0, 10), ...}`` replaces
them per game (e.g. with MinAtar's DQN figures under the package's semantics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from moerl.core.errors import ConfigError, check_choice, choice_error
from moerl.rl.envs.minatar.games import (
    DEFAULT_GAMES,
    GRID,
    INSTALL_HINT,
    NUM_FULL_ACTIONS,
    MinAtarGame,
    resolve_games,
)
from moerl.rl.envs.suite import SuiteEnv

ACTION_SETS = ("minimal", "full")
#: One colour per channel for ``render_mode="rgb_array"`` (a cell shows its last set channel).
_PALETTE = np.array(
    [[255, 255, 255], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
     [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [170, 110, 40]],
    dtype=np.uint8,
)
_RENDER_SCALE = 16


def require_minatar() -> ModuleType:
    """The ``minatar`` package, or the one-line :class:`ConfigError` that names the extra to install."""
    try:
        import minatar
    except ImportError:
        raise ConfigError(
            f"the MinAtar suites need the optional 'minatar' package (GPL-3.0), which is not installed: {INSTALL_HINT}"
        ) from None
    return minatar


def _check_probability(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not 0 <= value <= 1:
        raise ConfigError(f"{what} must be a probability in [0, 1], got {value!r}")
    return float(value)


class MinAtarSuiteEnv(SuiteEnv):
    """MinAtar games as the tasks of one MTRL or CRL suite (see the module docs for semantics and layout).

    Contract attributes: those of :class:`~moerl.rl.envs.suite.TaskSuiteEnv` (``mode``, ``task_names``,
    ``num_tasks``, ``task_onehot``, ``current_task``, ``valid_actions``, ``obs_bounds``, ``task_obs_bounds``,
    ``return_bounds``, ``base_obs_dim`` = ``100 * C``, ``tasks`` (the
    :class:`~moerl.rl.envs.minatar.games.MinAtarGame` objects), ``episode_limits``, :meth:`schedule`), plus
    ``grid_shape`` ``(10, 10, C)``, ``action_set``, ``sticky_action_prob`` and ``ramping``. ``info`` keys as
    there.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    tasks: tuple[MinAtarGame, ...]

    def __init__(
        self,
        games: str | Sequence[str] = DEFAULT_GAMES,
        mode: str = "mtrl",
        *,
        task_probs: Sequence[float] | None = None,
        block_steps: int | None = None,
        cycles: int | None = None,
        order: str | Sequence[int | str] | None = None,
        task_onehot: bool = True,
        fixed_task: int | str | None = None,
        max_episode_steps: int | None = None,
        action_set: str = "minimal",
        sticky_action_prob: float = 0.0,
        ramping: bool = True,
        return_bounds: Mapping[str, Sequence[float]] | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.tasks = resolve_games(games)
        super().__init__(
            tuple(g.name for g in self.tasks),
            mode,
            task_probs=task_probs,
            block_steps=block_steps,
            cycles=cycles,
            order=order,
            task_onehot=task_onehot,
            fixed_task=fixed_task,
            render_mode=render_mode,
        )
        self.action_set = check_choice("action_set", action_set, ACTION_SETS)
        self.sticky_action_prob = _check_probability("sticky_action_prob", sticky_action_prob)
        if not isinstance(ramping, (bool, np.bool_)):
            raise ConfigError(f"ramping must be true or false, got {ramping!r}")
        self.ramping = bool(ramping)
        self._set_limits([g.max_episode_steps for g in self.tasks], max_episode_steps)
        full = tuple(range(NUM_FULL_ACTIONS))
        #: Per task, the package's action (0-5) of each of the task's actions.
        self._game_actions = [g.minimal_actions if self.action_set == "minimal" else full for g in self.tasks]
        self._set_actions([len(a) for a in self._game_actions])

        self.num_channels = max(g.num_channels for g in self.tasks)
        self.grid_shape = (GRID, GRID, self.num_channels)
        self.base_obs_dim = GRID * GRID * self.num_channels
        size = self.base_obs_dim + (self.num_tasks if self.task_onehot else 0)
        self.observation_space = spaces.Box(0, 1, shape=(size,), dtype=np.uint8)
        self.task_obs_bounds = np.zeros((self.num_tasks, 2, self.base_obs_dim), dtype=np.float32)
        self.task_obs_bounds[:, 1] = 1.0
        self.obs_bounds = (self.task_obs_bounds[0, 0].copy(), self.task_obs_bounds[0, 1].copy())
        self.return_bounds = self._make_return_bounds(return_bounds)

        minatar = require_minatar()
        self._envs = [
            minatar.Environment(g.name, sticky_action_prob=self.sticky_action_prob, difficulty_ramping=self.ramping)
            for g in self.tasks
        ]

    def _make_return_bounds(self, given: Mapping[str, Sequence[float]] | None) -> np.ndarray:
        bounds = {g.name: g.return_bounds for g in self.tasks}
        if given is not None and not isinstance(given, Mapping):
            raise ConfigError(f"return_bounds must map game names to (low, high), got {given!r}")
        for name, pair in (given or {}).items():
            if name not in bounds:
                raise choice_error("game in return_bounds", name, self.task_names)
            try:
                low, high = (float(v) for v in pair)
            except (TypeError, ValueError):
                raise ConfigError(f"return_bounds of {name} must be (low, high), got {pair!r}") from None
            if not (np.isfinite(low) and np.isfinite(high) and low < high):
                raise ConfigError(f"return_bounds of {name} must be finite (low, high) with low < high, got {pair!r}")
            bounds[name] = (low, high)
        return np.array([bounds[name] for name in self.task_names], dtype=np.float64)

    def grid_of(self, obs: np.ndarray) -> np.ndarray:
        """The padded grids ``(..., 10, 10, C)`` of observations ``(..., obs_dim)`` (a view, no copy)."""
        obs = np.asarray(obs)
        return obs[..., : self.base_obs_dim].reshape(*obs.shape[:-1], *self.grid_shape)

    # ------------------------------------------------------------------ the games
    def _reset_game(self, task: int, options: dict[str, Any] | None) -> np.ndarray:
        env = self._envs[task]
        # The package draws from its own RandomState: seed it from the suite's generator, so that a seed fixes
        # the run; and start the episode from no-op as the previous action (what a fresh Environment does; the
        # package keeps the last episode's action for its first sticky draw otherwise).
        env.seed(int(self.np_random.integers(2**32)))
        env.last_action = 0
        env.reset()
        return env.state()

    def _step_game(self, task: int, action: int) -> tuple[np.ndarray, float, bool]:
        env = self._envs[task]
        reward, terminal = env.act(self._game_actions[task][action])
        return env.state(), float(reward), bool(terminal)

    def _write_game_obs(self, out: np.ndarray, game_obs: np.ndarray) -> None:
        out.reshape(self.grid_shape)[..., : game_obs.shape[-1]] = game_obs

    def render(self) -> np.ndarray | None:
        """``rgb_array``: the current game's grid, one colour per channel, each cell 16 x 16 pixels."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; make the suite with render_mode='rgb_array'")
            return None
        state = self._envs[self.current_task].state()
        image = np.zeros((GRID, GRID, 3), dtype=np.uint8)
        for channel in range(state.shape[-1]):
            image[state[..., channel]] = _PALETTE[channel]
        return np.repeat(np.repeat(image, _RENDER_SCALE, axis=0), _RENDER_SCALE, axis=1)
