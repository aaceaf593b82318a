"""Task families: fully specified variants of the base games, described by plain data.

A :class:`Task` names a base game, the physics it changes and how the agent's actions map onto the base
game's actions. Physics variants change the dynamics while the same kind of policy still works; the
*mirrored* tasks (action 0 pushes the other way) need the opposite policy, so they conflict with the
default task and make interference between tasks measurable.

Default task lists (what ``tasks="cartpole"``, ``"mountaincar"`` and ``"classic"`` mean):

* cartpole: ``cartpole-default``, ``cartpole-longheavy`` (pole twice as long, five times as heavy),
  ``cartpole-lowgrav`` (half gravity, double push force), ``cartpole-mirror`` (actions swapped).
* mountaincar: ``mountaincar-default``, ``mountaincar-strong`` (engine force x1.5),
  ``mountaincar-lowgrav`` (gravity x0.8), ``mountaincar-mirror`` (actions 0 and 2 swapped).
* classic: the eight tasks above, alternating games, so that a sequential continual run switches
  game at every block.

Return bounds (used to normalise returns to [0, 1] for continual metrics): CartPole tasks use
(0, 500), the whole possible range (a random policy scores about 16-34, i.e. 0.03-0.07). MountainCar
tasks use (-200, best): -200 is a run that never reaches the flag (what a random policy scores) and
``best`` is about the best mean return reachable: -100 for the stock and mirrored game (a well-trained
agent; the official "solved" threshold is -110), and for the physics variants the mean return of the
better of two energy-pumping controllers over 200 starts, rounded up to the next 10 (strong -81 -> -80,
low gravity -93 -> -90). Normalised returns may slightly exceed 1 for an agent that beats these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from moerl.core.errors import ConfigError, check_choice, choice_error
from moerl.rl.envs.games import Game, check_physics, get_game


@dataclass(frozen=True)
class Task:
    """One fully specified task: a base game with set physics and an action mapping.

    Attributes:
        name: unique, short, readable name (``"cartpole-mirror"``).
        game: base game name, a key of :data:`moerl.rl.envs.games.GAMES`.
        physics: physics parameters that differ from the stock game, as sorted ``(key, value)`` pairs
            (a mapping is accepted and converted, so that tasks stay hashable).
        action_map: ``action_map[a]`` is the base-game action the agent's action ``a`` performs;
            empty means identity.
        return_bounds: (low, high) episode return under the game's default time limit used to normalise
            returns; ``None`` takes the game's default.
        description: one line for listings.
    """

    name: str
    game: str
    physics: tuple[tuple[str, float], ...] | Mapping[str, float] = ()
    action_map: tuple[int, ...] = ()
    return_bounds: tuple[float, float] | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        base = get_game(self.game)
        physics = dict(self.physics)
        check_physics(base, physics)
        object.__setattr__(self, "physics", tuple(sorted((k, float(v)) for k, v in physics.items())))
        action_map = tuple(int(a) for a in self.action_map) or tuple(range(base.n_actions))
        if sorted(action_map) != list(range(base.n_actions)):
            raise ConfigError(
                f"task {self.name}: action_map {action_map} must be a permutation of 0..{base.n_actions - 1}"
            )
        object.__setattr__(self, "action_map", action_map)
        bounds = tuple(float(b) for b in (self.return_bounds or base.return_bounds))
        if len(bounds) != 2 or not bounds[0] < bounds[1]:
            raise ConfigError(f"task {self.name}: return_bounds {bounds} must be (low, high) with low < high")
        object.__setattr__(self, "return_bounds", bounds)

    @property
    def base(self) -> Game:
        """The base :class:`~moerl.rl.envs.games.Game`."""
        return get_game(self.game)

    @property
    def physics_dict(self) -> dict[str, float]:
        """All physics parameters of this task: the stock values updated by the task's changes."""
        return {**self.base.physics, **dict(self.physics)}

    @property
    def mirrored(self) -> bool:
        """Whether the action mapping differs from the identity."""
        return self.action_map != tuple(range(len(self.action_map)))


_CARTPOLE_TASKS = (
    Task("cartpole-default", "cartpole", description="stock CartPole-v1"),
    Task(
        "cartpole-longheavy",
        "cartpole",
        {"length": 1.0, "masspole": 0.5},
        description="pole twice as long and five times as heavy",
    ),
    Task(
        "cartpole-lowgrav",
        "cartpole",
        {"gravity": 4.9, "force_mag": 20.0},
        description="half gravity, double push force",
    ),
    Task("cartpole-mirror", "cartpole", action_map=(1, 0), description="action 0 pushes right"),
    # Extra variants, not in the default list.
    Task("cartpole-heavycart", "cartpole", {"masscart": 3.0}, description="cart three times as heavy"),
    Task("cartpole-shortpole", "cartpole", {"length": 0.25}, description="pole half as long"),
    Task("cartpole-highgrav", "cartpole", {"gravity": 15.0}, description="gravity 15 m/s^2"),
)

_MOUNTAINCAR_TASKS = (
    Task("mountaincar-default", "mountaincar", description="stock MountainCar-v0"),
    Task(
        "mountaincar-strong",
        "mountaincar",
        {"force": 0.0015},
        return_bounds=(-200.0, -80.0),
        description="engine force x1.5",
    ),
    Task(
        "mountaincar-lowgrav",
        "mountaincar",
        {"gravity": 0.0020},
        return_bounds=(-200.0, -90.0),
        description="gravity x0.8",
    ),
    Task("mountaincar-mirror", "mountaincar", action_map=(2, 1, 0), description="action 0 pushes right"),
    # Extra variants, not in the default list.
    Task(
        "mountaincar-highgrav",
        "mountaincar",
        {"gravity": 0.0030},
        return_bounds=(-200.0, -130.0),
        description="gravity x1.2 (some starts need several swings)",
    ),
)

TASKS: dict[str, Task] = {task.name: task for task in _CARTPOLE_TASKS + _MOUNTAINCAR_TASKS}
"""Every named task, by name."""

_CP = ("cartpole-default", "cartpole-longheavy", "cartpole-lowgrav", "cartpole-mirror")
_MC = ("mountaincar-default", "mountaincar-strong", "mountaincar-lowgrav", "mountaincar-mirror")

FAMILIES: dict[str, tuple[str, ...]] = {
    "cartpole": _CP,
    "mountaincar": _MC,
    "classic": tuple(name for pair in zip(_CP, _MC, strict=True) for name in pair),
}
"""Default task lists by family name."""


def get_task(name: str) -> Task:
    """Return the named :class:`Task` or raise :class:`~moerl.core.errors.ConfigError`."""
    return TASKS[check_choice("task", name, TASKS)]


def resolve_tasks(tasks: str | Sequence[str | Task]) -> tuple[Task, ...]:
    """Turn a family name, or a list of task names and :class:`Task` objects, into tasks.

    Raises :class:`~moerl.core.errors.ConfigError` for an unknown family or task name, an empty list or a
    task name used twice (task names identify tasks in logs and metrics).
    """
    if isinstance(tasks, str):
        if tasks not in FAMILIES:
            raise choice_error("task family", tasks, FAMILIES)
        tasks = FAMILIES[tasks]
    resolved = tuple(t if isinstance(t, Task) else get_task(str(t)) for t in tasks)
    if not resolved:
        raise ConfigError(
            f"task list is empty; give a family ({', '.join(FAMILIES)}) or task names ({', '.join(TASKS)})"
        )
    names = [t.name for t in resolved]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"task list names {', '.join(duplicates)} more than once: {', '.join(names)}")
    return resolved
