"""The five MinAtar games as plain data: what the MinAtar task suites declare about each one.

Plain data (no torch, no Gymnasium, no ``minatar``), so that the suites can be listed and validated without
the optional package, and so that the batched side can read the same table later. The channel counts and
minimal action sets are MinAtar's (Young and Tian 2019); a test checks them against the ``minatar``
package and against the batched games' :class:`~moerl.rl.envs.minatar.base.GameSpec`.

Episode limits (the package itself never truncates; see :mod:`moerl.rl.envs.minatar_suite`): gymnax's, the
episode length of the paper's code base (PureJaxRL on gymnax): 1,000 steps, except Freeway, whose game ends
on its own clock after 2,500 steps (gymnax's limit there is 2,500 too).

Return bounds (for returns normalised to [0, 1]): **an assumption**, ``(0, reference)`` where 0 is the least
any episode can score and ``reference`` the score of PPO after 1e7 steps under the same semantics (minimal
action set, no sticky actions, ramping, these limits), read off gymnax's published curves as collected in
the project's ``specs/minatar-ppo.md``: SpaceInvaders 131, Breakout 28, Asterix 15, Freeway 58. gymnax has no
Seaquest figure: its 20 is MinAtar's own DQN after 5M frames (full action set, sticky actions, before the
package's oxygen fix), the weakest of the five. A normalised return of 1 therefore means "as good as the
published PPO"; the continual metrics clip at 1, so an agent better than that saturates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from moerl.core.errors import ConfigError, choice_error

#: How to install the optional ``minatar`` package (GPL-3.0), as error messages and ``moerl envs`` say it.
INSTALL_HINT = 'pip install "moerl[minatar]"'
#: MinAtar's full action set has six actions: no-op, left, up, right, down, fire (in this order).
NUM_FULL_ACTIONS = 6
GRID = 10


@dataclass(frozen=True)
class MinAtarGame:
    """One MinAtar game.

    Attributes:
        name: the ``minatar`` package's name of the game (``"space_invaders"``), also the task name.
        title: the name in Gymnasium ids (``"SpaceInvaders"``).
        num_channels: boolean channels of its 10x10 grid.
        minimal_actions: its minimal action set, as indices into the full set of six, in MinAtar's order.
        max_episode_steps: the suites' default episode limit (truncation) for this game.
        return_bounds: (low, high) episode return used to normalise returns (see the module docstring).
    """

    name: str
    title: str
    num_channels: int
    minimal_actions: tuple[int, ...]
    max_episode_steps: int
    return_bounds: tuple[float, float]


GAMES: dict[str, MinAtarGame] = {
    game.name: game
    for game in (
        MinAtarGame("asterix", "Asterix", 4, (0, 1, 2, 3, 4), 1000, (0.0, 15.0)),
        MinAtarGame("breakout", "Breakout", 4, (0, 1, 3), 1000, (0.0, 28.0)),
        MinAtarGame("freeway", "Freeway", 7, (0, 2, 4), 2500, (0.0, 58.0)),
        MinAtarGame("seaquest", "Seaquest", 10, (0, 1, 2, 3, 4, 5), 1000, (0.0, 20.0)),
        MinAtarGame("space_invaders", "SpaceInvaders", 6, (0, 1, 3, 5), 1000, (0.0, 131.0)),
    )
}
"""Every MinAtar game, by name."""

#: The paper's three games (arXiv 2406.18420), in the order it lists them: the suites' default.
DEFAULT_GAMES = ("space_invaders", "breakout", "asterix")


def resolve_games(games: str | Sequence[str]) -> tuple[MinAtarGame, ...]:
    """A game name or a list of names -> the games; :class:`ConfigError` (one line, naming the valid games) for
    an unknown name, an empty list or a game named twice."""
    names = [games] if isinstance(games, str) else games
    if not isinstance(names, Sequence) or not names:
        raise ConfigError(f"games must be a non-empty list of MinAtar games ({', '.join(GAMES)}), got {games!r}")
    resolved = []
    for name in names:
        if not isinstance(name, str) or name not in GAMES:
            raise choice_error("MinAtar game", name, GAMES)
        resolved.append(GAMES[name])
    duplicates = sorted({n for n in names if list(names).count(n) > 1})
    if duplicates:
        raise ConfigError(f"games names {', '.join(duplicates)} more than once: {', '.join(names)}")
    return tuple(resolved)
