"""Base games the task suites are built on: CartPole and MountainCar from Gymnasium's classic control.

A :class:`Game` is the plain-data description of one base game (sizes, time limit, the physics
parameters a task may change, the observation bounds used to rescale network inputs). Both suite
implementations read it: the Gymnasium reference (:mod:`moerl.rl.envs.suite`, which builds the stock
environment with :mod:`moerl.rl.envs.gym_games`) and the batched torch dynamics
(:mod:`moerl.rl.envs.batched`). Plain data, so the torch side imports no Gymnasium.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from moerl.core.errors import ConfigError, check_choice


@dataclass(frozen=True)
class Game:
    """One base game.

    Attributes:
        name: short name used in task definitions (``"cartpole"``, ``"mountaincar"``).
        gym_id: the Gymnasium id whose dynamics and time limit this game reproduces.
        n_actions: number of discrete actions of the base game.
        obs_dim: length of the base observation vector.
        obs_bounds: finite (low, high) per observation dimension used to rescale inputs to [-1, 1]
            (dopamine's classic-control bounds; real observations may leave them, e.g. CartPole velocities).
        max_episode_steps: the usual time limit of ``gym_id`` (truncation after this many steps).
        physics: the physics parameters a task may set, with the stock values.
        return_bounds: default (low, high) episode return used to normalise returns to [0, 1].
    """

    name: str
    gym_id: str
    n_actions: int
    obs_dim: int
    obs_bounds: tuple[tuple[float, ...], tuple[float, ...]]
    max_episode_steps: int
    physics: Mapping[str, float]
    return_bounds: tuple[float, float]


CARTPOLE = Game(
    name="cartpole",
    gym_id="CartPole-v1",
    n_actions=2,
    obs_dim=4,
    obs_bounds=((-2.4, -5.0, -math.pi / 12, -2 * math.pi), (2.4, 5.0, math.pi / 12, 2 * math.pi)),
    max_episode_steps=500,
    physics={"gravity": 9.8, "masscart": 1.0, "masspole": 0.1, "length": 0.5, "force_mag": 10.0},
    # Every step is worth +1, so 0 (nothing) to the time limit (balanced throughout).
    return_bounds=(0.0, 500.0),
)

MOUNTAINCAR = Game(
    name="mountaincar",
    gym_id="MountainCar-v0",
    n_actions=3,
    obs_dim=2,
    obs_bounds=((-1.2, -0.07), (0.6, 0.07)),
    max_episode_steps=200,
    physics={"force": 0.001, "gravity": 0.0025},
    # -200: the goal never reached (what a random policy scores); -100: a well-trained agent
    # (rl-zoo's tuned DQN; the official "solved" threshold is -110).
    return_bounds=(-200.0, -100.0),
)

GAMES: dict[str, Game] = {game.name: game for game in (CARTPOLE, MOUNTAINCAR)}


def get_game(name: str) -> Game:
    """Return the :class:`Game` called ``name`` or raise :class:`~moerl.core.errors.ConfigError`."""
    return GAMES[check_choice("game", name, GAMES)]


def check_physics(game: Game, params: Mapping[str, float]) -> None:
    """Raise :class:`ConfigError` for a physics key the game lacks or a non-positive, non-finite value."""
    for key, value in params.items():
        check_choice(f"{game.name} physics parameter", key, game.physics)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{game.name} physics parameter {key} must be a positive number, got {value}")
