"""Registration of moerl's Gymnasium ids (idempotent, runs on ``import moerl``).

Ids, all served by :class:`moerl.rl.envs.suite.TaskSuiteEnv` (keyword arguments to ``gym.make`` override the
defaults: ``tasks``, ``block_steps``, ``cycles``, ``order``, ``task_probs``, ``task_onehot``,
``fixed_task``):

=================================  =========================================================================
``moerl/CartPole-MTRL-v0``         4 CartPole tasks, uniform per episode; default budget 40_000 steps
``moerl/CartPole-CRL-v0``          same tasks, sequential blocks of 10_000 steps, 1 cycle (40_000 steps)
``moerl/MountainCar-MTRL-v0``      4 MountainCar tasks, uniform; default budget 100_000 steps
``moerl/MountainCar-CRL-v0``       same tasks, blocks of 25_000 steps, 1 cycle (100_000 steps)
``moerl/ClassicControl-MTRL-v0``   the 8 tasks, games alternating; default budget 120_000 steps
``moerl/ClassicControl-CRL-v0``    the 8 tasks, blocks of 15_000 steps, 1 cycle (120_000 steps)
=================================  =========================================================================

Why these budgets: a default CRL run must finish in minutes on a 2-core CPU, while each block stays
long enough for DQN to learn something on it (dopamine trains one CartPole for 50k steps and one
MountainCar for 100k). MTRL defaults use the same total budget as the matching CRL suite so that the two
settings are compared at equal experience.

No ``max_episode_steps`` is registered: the suite truncates episodes itself (CartPole 500, MountainCar
200), and Gymnasium's ``TimeLimit`` on top would be a second, redundant limit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from moerl.core.errors import ConfigError, did_you_mean
from moerl.rl.envs.tasks import FAMILIES, resolve_tasks

ENTRY_POINT = "moerl.rl.envs.suite:TaskSuiteEnv"


@dataclass(frozen=True)
class _Suite:
    short_name: str
    env_id: str
    family: str
    mode: str
    block_steps: int  # CRL block length; for MTRL it only sizes the default budget (x number of tasks)

    @property
    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"tasks": self.family, "mode": self.mode}
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
            gym.register(id=suite.env_id, entry_point=ENTRY_POINT, kwargs=suite.kwargs)


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


def check_env_kwargs(env_id: str, env_kwargs: dict[str, Any]) -> None:
    """Refuse env settings a training run would not honour, before anything runs.

    * ``render_mode``: training never shows or keeps frames; ``rgb_array`` would compute one per step for
      nothing, and ``human`` windows share one pygame display between the training and evaluation envs (closing
      one ends the others' mid-run). Render a saved model instead.
    * ``tasks`` on a suite named after one game (``cartpole-crl``): tasks of another game would train that game
      under this suite's name; the classic-control suites take any tasks.
    * An id whose entry point needs a package that is not installed (``phys2d/...`` needs jax).
    """
    if "render_mode" in env_kwargs:
        raise ConfigError(
            f"env_kwargs.render_mode={env_kwargs['render_mode']!r}: training runs do not render (frames would be "
            "computed and dropped); remove it, and render a saved model with gymnasium after training"
        )
    suite = _BY_ID.get(env_id)
    if suite is not None and "tasks" in env_kwargs and suite.family != "classic":
        allowed = FAMILIES[suite.family]
        foreign = [t.name for t in resolve_tasks(env_kwargs["tasks"]) if t.name not in allowed]
        if foreign:
            others = ", ".join(s.short_name for s in _SUITES if s.mode == suite.mode and s.family != suite.family)
            raise ConfigError(
                f"env_kwargs.tasks names {', '.join(foreign)}, not tasks of '{suite.short_name}' "
                f"({', '.join(allowed)}); for other tasks use {others}"
            )
    _check_entry_point(env_id)


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
    from moerl.rl.envs.suite import TaskSuiteEnv  # deferred: building the env is not needed to register

    env = TaskSuiteEnv(**{**suite.kwargs, **overrides})
    try:
        if env.mode == "crl" and env.schedule():
            return len(env.schedule()) * env.block_steps
        return env.num_tasks * suite.block_steps
    finally:
        env.close()


def describe_suites() -> list[tuple[str, str]]:
    """(short name, one line listing its tasks and defaults) per suite, for ``moerl envs``."""
    rows = []
    for suite in _SUITES:
        tasks = FAMILIES[suite.family]
        steps = default_timesteps(suite.env_id)
        if suite.mode == "crl":
            setting = f"CRL, sequential blocks of {suite.block_steps:,} steps x {len(tasks)} tasks x 1 cycle"
        else:
            setting = "MTRL, task drawn uniformly per episode"
        rows.append(
            (
                suite.short_name,
                f"{suite.env_id}: {setting}, default {steps:,} steps; tasks: {', '.join(tasks)}",
            )
        )
    return rows
