"""The Gymnasium side of the base games: the stock environment with a task's physics.

The reference suite never subclasses or copies Gymnasium's dynamics: it builds the stock environment and
sets its physics attributes, recomputing the quantities that the stock ``__init__`` derives from them
(CartPole's ``total_mass`` and ``polemass_length``), because the stock ``step`` reads the derived values,
not the raw ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv, MountainCarEnv


def set_cartpole_physics(env: CartPoleEnv, **params: float) -> CartPoleEnv:
    """Set CartPole physics and recompute the derived masses that ``CartPoleEnv.__init__`` caches.

    ``length`` is Gymnasium's *half* pole length (0.5 by default).
    """
    for key, value in params.items():
        setattr(env, key, float(value))
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length
    return env


def _build_cartpole(params: Mapping[str, float], render_mode: str | None) -> gym.Env:
    return set_cartpole_physics(CartPoleEnv(render_mode=render_mode), **params)


def _build_mountaincar(params: Mapping[str, float], render_mode: str | None) -> gym.Env:
    env = MountainCarEnv(render_mode=render_mode)
    for key, value in params.items():
        setattr(env, key, float(value))
    return env


#: Game name -> a builder of the stock environment with the given physics and render mode.
BUILDERS: dict[str, Callable[[Mapping[str, float], str | None], gym.Env]] = {
    "cartpole": _build_cartpole,
    "mountaincar": _build_mountaincar,
}


def build_game(game: str, physics: Mapping[str, float], render_mode: str | None) -> gym.Env:
    """Gymnasium's own environment of ``game`` with ``physics``."""
    return BUILDERS[game](physics, render_mode)
