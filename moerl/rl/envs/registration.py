"""Registration of moerl's Gymnasium ids (idempotent, runs on ``import moerl``).

Ids (keyword arguments to ``gym.make`` override the defaults: ``tasks`` or ``games``, ``block_steps``,
``cycles``, ``order``, ``task_probs``, ``task_onehot``, ``fixed_task``, ...), served by
:class:`moerl.rl.envs.suite.TaskSuiteEnv` (classic control) and
:class:`moerl.rl.envs.minatar_suite.MinAtarSuiteEnv` (MinAtar, needs the optional ``minatar`` package):

=================================  =========================================================================
``moerl/CartPole-MTRL-v0``         4 CartPole tasks, uniform per episode; default budget 40_000 steps
``moerl/CartPole-CRL-v0``          same tasks, sequential blocks of 10_000 steps, 1 cycle (40_000 steps)
``moerl/MountainCar-MTRL-v0``      4 MountainCar tasks, uniform; default budget 100_000 steps
``moerl/MountainCar-CRL-v0``       same tasks, blocks of 25_000 steps, 1 cycle (100_000 steps)
``moerl/ClassicControl-MTRL-v0``   the 8 tasks, games alternating; default budget 120_000 steps
``moerl/ClassicControl-CRL-v0``    the 8 tasks, blocks of 15_000 steps, 1 cycle (120_000 steps)
``moerl/MinAtar-MTRL-v0``          SpaceInvaders, Breakout, Asterix, uniform; default budget 300_000 steps
``moerl/MinAtar-CRL-v0``           same games, blocks of 100_000 steps, 1 cycle (300_000 steps)
=================================  =========================================================================

Why these budgets: a default CRL run must finish in minutes on a 2-core CPU, while each block stays
long enough for DQN to learn something on it (dopamine trains one CartPole for 50k steps and one
MountainCar for 100k). MTRL defaults use the same total budget as the matching CRL suite so that the two
settings are compared at equal experience. MinAtar is the exception in scale: its published curves run 5M
frames (MinAtar's DQN) to 1e7 steps (PPO) per game, hours to days on a CPU. Its default blocks of 100k steps
are a smoke scale, enough to see learning begin and the tasks interfere, not to compare with published scores
(a default run trains at ~500 env steps/s on one core for the dense network on the SB3 path, ~10 minutes
before evaluations); a study sets its own ``block_steps``.

No ``max_episode_steps`` is registered: the suite truncates episodes itself (CartPole 500, MountainCar
200, MinAtar 1,000 or Freeway 2,500), and Gymnasium's ``TimeLimit`` on top would be a second, redundant limit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from moerl.core.errors import ConfigError, did_you_mean
from moerl.rl.envs.minatar.games import DEFAULT_GAMES as MINATAR_DEFAULT_GAMES
from moerl.rl.envs.minatar.games import GAMES as MINATAR_GAMES
from moerl.rl.envs.minatar.games import INSTALL_HINT, resolve_games
from moerl.rl.envs.tasks import FAMILIES, resolve_tasks

ENTRY_POINT = "moerl.rl.envs.suite:TaskSuiteEnv"
MINATAR_ENTRY_POINT = "moerl.rl.envs.minatar_suite:MinAtarSuiteEnv"
#: The family of the MinAtar suites (their tasks are games, chosen with ``games``, not ``tasks``).
MINATAR = "minatar"


@dataclass(frozen=True)
class _Suite:
    short_name: str
    env_id: str
    family: str
    mode: str
    block_steps: int  # CRL block length; for MTRL it only sizes the default budget (x number of tasks)

    @property
    def entry_point(self) -> str:
        return MINATAR_ENTRY_POINT if self.family == MINATAR else ENTRY_POINT

    @property
    def tasks(self) -> tuple[str, ...]:
        """The default task names."""
        return MINATAR_DEFAULT_GAMES if self.family == MINATAR else FAMILIES[self.family]

    @property
    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = (
            {"games": list(self.tasks)} if self.family == MINATAR else {"tasks": self.family}
        )
        kwargs["mode"] = self.mode
        if self.mode == "crl":
            kwargs.update(block_steps=self.block_steps, cycles=1, order="sequential")
        return kwargs


_SUITES = (
    _Suite("cartpole-mtrl", "moerl/CartPole-MTRL-v0", "cartpole", "mtrl", 10_000),
    _Suite("cartpole-crl", "moerl/CartPole-CRL-v0", "cartpole", "crl", 10_000),
    _Suite("mountaincar-mtrl", "moerl/MountainCar-MTRL-v0", "mountaincar", "mtrl", 25_000),
    _Suite("mountaincar-crl", "moerl/MountainCar-CRL-v0", "mountaincar", "crl", 25_000),
    _Suite("classic-mtrl", "moerl/ClassicControl-MTRL-v0", "classic", "mtrl", 15_000),
    _Suite("classic-crl", "moerl/ClassicControl-CRL-v0", "classic", "crl", 15_000),
    _Suite("minatar-mtrl", "moerl/MinAtar-MTRL-v0", MINATAR, "mtrl", 100_000),
    _Suite("minatar-crl", "moerl/MinAtar-CRL-v0", MINATAR, "crl", 100_000),
)
_BY_ID = {s.env_id: s for s in _SUITES}

SHORT_NAMES: dict[str, str] = {s.short_name: s.env_id for s in _SUITES}
"""CLI short name -> Gymnasium id."""


def register_all() -> None:
    """Register every ``moerl/...`` id with Gymnasium; ids already registered are left alone.

    Entry points are strings, so nothing heavy (torch) is imported until an env is
    made: ``import moerl`` stays fast.
    """
    for suite in _SUITES:
        if suite.env_id not in gym.registry:
            gym.register(id=suite.env_id, entry_point=suite.entry_point, kwargs=suite.kwargs)


def resolve_env_id(name: str) -> str:
    """The Gymnasium id of a short name (``cartpole-crl``), a moerl id or any registered Gymnasium id.

    Unknown names raise the one-line :class:`ConfigError`, with a "did you mean" over the short names and
    every registered Gymnasium id (``CartPole-v2`` -> ``CartPole-v1``).
    """
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]
    if name in gym.registry:
        return name
    close = did_you_mean(name, [*SHORT_NAMES, *gym.registry])
    raise ConfigError(
        f"unknown env '{name}'{close}; valid choices: any Gymnasium id (e.g. CartPole-v1) "
        f"or one of {', '.join(SHORT_NAMES)}"
    )


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make``, except that on moerl's suites ``max_episode_steps`` is the suite's own episode limit.

    Why: ``gym.make`` consumes ``max_episode_steps`` itself and wraps the env in a ``TimeLimit``. The batched
    engine reproduces the suite from its spec (``.unwrapped``) and cannot see that wrapper, and the suite's
    return bounds (used to normalise returns) would stay at the game's usual limit. Handing the keyword to the
    suite gives both engines the same episodes and the bounds that go with them; other ids get plain
    ``gym.make`` (its ``TimeLimit``).
    """
    if env_id in _BY_ID and "max_episode_steps" in kwargs:
        spec = gym.spec(env_id)
        limit = kwargs.pop("max_episode_steps")
        spec = dataclasses.replace(spec, kwargs={**spec.kwargs, "max_episode_steps": limit})
        return gym.make(spec, **kwargs)
    return gym.make(env_id, **kwargs)


def has_grid(env_id: str) -> bool:
    """Whether ``env_id``'s observations begin with a grid (a ``grid_shape`` attribute: the MinAtar suites),
    known without making the env: what ``network.torso: conv`` needs, checked before a run starts."""
    suite = _BY_ID.get(SHORT_NAMES.get(env_id, env_id))
    return suite is not None and suite.family == MINATAR


def check_env_kwargs(env_id: str, env_kwargs: dict[str, Any]) -> None:
    """Refuse env settings a training run would not honour, before anything runs.

    * ``render_mode``: training never shows or keeps frames; ``rgb_array`` would compute one per step for
      nothing, and ``human`` windows share one pygame display between the training and evaluation envs (closing
      one ends the others' mid-run). Render a saved model instead.
    * ``tasks`` on a suite named after one game (``cartpole-crl``): tasks of another game would train that game
      under this suite's name; the classic-control suites take any tasks.
    * An id whose entry point needs a package that is not installed (``phys2d/...`` needs jax; the MinAtar
      suites need the ``minatar`` extra: the message says how to install it).
    * On the MinAtar suites: ``tasks`` (their tasks are ``games``) and games that do not exist.
    """
    if "render_mode" in env_kwargs:
        raise ConfigError(
            f"env_kwargs.render_mode={env_kwargs['render_mode']!r}: training runs do not render (frames would be "
            "computed and dropped); remove it, and render a saved model with gymnasium after training"
        )
    suite = _BY_ID.get(env_id)
    if suite is not None and suite.family == MINATAR:
        _check_minatar_kwargs(suite, env_kwargs)
    elif suite is not None and "tasks" in env_kwargs and suite.family != "classic":
        allowed = FAMILIES[suite.family]
        foreign = [t.name for t in resolve_tasks(env_kwargs["tasks"]) if t.name not in allowed]
        if foreign:
            others = ", ".join(s.short_name for s in _SUITES if s.mode == suite.mode and s.family != suite.family)
            raise ConfigError(
                f"env_kwargs.tasks names {', '.join(foreign)}, not tasks of '{suite.short_name}' "
                f"({', '.join(allowed)}); for other tasks use {others}"
            )
    _check_entry_point(env_id)


def _check_minatar_kwargs(suite: _Suite, env_kwargs: dict[str, Any]) -> None:
    from moerl.rl.envs.minatar_suite import require_minatar

    if "tasks" in env_kwargs:
        raise ConfigError(
            f"env_kwargs.tasks does not apply to '{suite.short_name}': choose its games with env_kwargs.games "
            f"(any of {', '.join(MINATAR_GAMES)})"
        )
    resolve_games(env_kwargs.get("games", suite.tasks))
    require_minatar()


def _check_entry_point(env_id: str) -> None:
    """Import the env's entry point now, so a missing optional package is one line, not a mid-run traceback."""
    from gymnasium.envs.registration import load_env_creator
    from gymnasium.error import DependencyNotInstalled

    entry = gym.spec(env_id).entry_point
    if not isinstance(entry, str):
        return
    try:
        load_env_creator(entry)
    except (ImportError, DependencyNotInstalled) as exc:
        raise ConfigError(f"env '{env_id}' needs a package that is not installed ({exc})") from None


def default_timesteps(env_id: str, **overrides: Any) -> int | None:
    """Total training steps a run on ``env_id`` should take by default; ``None`` for ids not moerl's.

    CRL: the whole schedule, ``len(schedule()) * block_steps`` (blocks x cycles x block length), taking
    ``overrides`` (the ``gym.make`` keywords the run uses) into account. MTRL: the same budget as the
    matching CRL suite, number of tasks x its block length. ``env_id`` may be a short name.
    """
    suite = _BY_ID.get(SHORT_NAMES.get(env_id, env_id))
    if suite is None:
        return None
    # deferred: the suite classes are not needed to register
    from moerl.rl.envs.minatar_suite import MinAtarSuiteEnv
    from moerl.rl.envs.suite import SuiteEnv, TaskSuiteEnv

    kwargs = {**suite.kwargs, **overrides}
    env: SuiteEnv = MinAtarSuiteEnv(**kwargs) if suite.family == MINATAR else TaskSuiteEnv(**kwargs)
    try:
        if env.mode == "crl" and env.schedule():
            return len(env.schedule()) * env.block_steps
        return env.num_tasks * suite.block_steps
    finally:
        env.close()


def describe_suites() -> list[tuple[str, str]]:
    """(short name, one line listing its tasks and defaults) per suite, for ``moerl envs``.

    Listed from the registry's defaults, without making any env: the MinAtar suites are listed (with how to
    install their package) where ``minatar`` is not installed. The default budget is ``default_timesteps``'s
    with no overrides: one block per task, one cycle.
    """
    rows = []
    for suite in _SUITES:
        tasks = suite.tasks
        steps = len(tasks) * suite.block_steps
        if suite.mode == "crl":
            setting = f"CRL, sequential blocks of {suite.block_steps:,} steps x {len(tasks)} tasks x 1 cycle"
        else:
            setting = "MTRL, task drawn uniformly per episode"
        line = f"{suite.env_id}: {setting}, default {steps:,} steps; tasks: {', '.join(tasks)}"
        if suite.family == MINATAR:
            line += f" (env_kwargs.games: any of {', '.join(MINATAR_GAMES)}; needs {INSTALL_HINT})"
        rows.append((suite.short_name, line))
    return rows
